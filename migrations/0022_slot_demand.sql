-- Slots of a session (OutboxStore/Claim/ClaimQuery.swift): a session of one slot (max_in_flight
-- 1) whose limits let sends go back to back takes up to ten chats in one claim and sends them one
-- after another. in_flight counts busy lanes, so it reaches ten (nineteen at most) while the
-- session sends one message at a time. The demand an autoscaler follows counts the dispatches
-- that can run at once: a session's running ones are at most its max_in_flight.
--
-- Only the function changes; workers built before it keep working (stop none).
CREATE OR REPLACE FUNCTION wa_outbox.dispatch_demand() RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT (SELECT coalesce(sum(least(s.in_flight, s.max_in_flight)), 0) FROM wa_outbox.sessions s)::bigint
           + wa_outbox.runnable_demand()
$$;
