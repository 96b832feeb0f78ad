-- An API process dispatches its synchronous sends itself (JobDispatch/DirectDispatch.swift): it
-- claims the job it just enqueued, in the same transaction, calls the engine and writes the
-- completion, under a lease of its own in wa_outbox.workers like a worker's (so the workers'
-- rescue hands its jobs on if it dies). grant_roles() again, as migration 0014 asks, with what that
-- takes for wa_outbox_api:
--   jobs       UPDATE of the columns the claim and the completion write; never payload, org,
--              session or chat, and still no DELETE.
--   sessions   UPDATE of in_flight (the claim, the completion), not_before, state and state_reason
--              (a completion's rate-limit wait or account restriction); never limits or engines.
--   workers    its lease: register, heartbeat, deregister.
-- And wa_outbox.enqueue_to_claim: enqueue_notify_after_commit that also names the job it made in
-- the transaction's setting wa_outbox.enqueued_job (none for a replayed request), so that the
-- claim, sent with it in one round trip, can find it (ClaimQuery.claimEnqueued).

CREATE OR REPLACE FUNCTION wa_outbox.grant_roles() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'wa_outbox_api') THEN
        GRANT USAGE ON SCHEMA wa_outbox TO wa_outbox_api;
        GRANT SELECT ON wa_outbox.sessions, wa_outbox.jobs, wa_outbox.events, wa_outbox.audit, wa_outbox.api_keys,
                        wa_outbox.schema_migrations TO wa_outbox_api;
        GRANT INSERT ON wa_outbox.jobs, wa_outbox.events TO wa_outbox_api;
        GRANT SELECT, INSERT, UPDATE ON wa_outbox.lanes TO wa_outbox_api;
        GRANT UPDATE (last_used_at) ON wa_outbox.api_keys TO wa_outbox_api;
        GRANT SELECT, INSERT, UPDATE, DELETE ON wa_outbox.console_logins TO wa_outbox_api;
        GRANT INSERT ON wa_outbox.audit TO wa_outbox_api;
        -- Claiming and completing its own synchronous sends (this migration).
        GRANT UPDATE (state, attempts, claim_token, worker_id, available_at, error_code, error_message, maybe_sent,
                      maybe_sent_at, sent_at, finished_at, engine_message_id, engine_key_id) ON wa_outbox.jobs TO wa_outbox_api;
        GRANT UPDATE (in_flight, not_before, state, state_reason) ON wa_outbox.sessions TO wa_outbox_api;
        GRANT SELECT, INSERT, UPDATE, DELETE ON wa_outbox.workers TO wa_outbox_api;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'wa_outbox_worker') THEN
        GRANT USAGE ON SCHEMA wa_outbox TO wa_outbox_worker;
        GRANT SELECT, UPDATE, DELETE ON wa_outbox.jobs TO wa_outbox_worker;
        GRANT SELECT, UPDATE ON wa_outbox.sessions TO wa_outbox_worker;
        GRANT SELECT, INSERT, DELETE ON wa_outbox.events, wa_outbox.audit TO wa_outbox_worker;
        GRANT SELECT, INSERT, UPDATE, DELETE ON wa_outbox.lanes, wa_outbox.workers, wa_outbox.receipts_pending TO wa_outbox_worker;
        GRANT SELECT ON wa_outbox.schema_migrations TO wa_outbox_worker;
        GRANT SELECT, INSERT, UPDATE, DELETE ON wa_outbox.console_logins TO wa_outbox_worker;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'wa_outbox_operator') THEN
        GRANT USAGE ON SCHEMA wa_outbox TO wa_outbox_operator;
        GRANT SELECT, INSERT, UPDATE, DELETE ON wa_outbox.sessions, wa_outbox.jobs, wa_outbox.lanes, wa_outbox.workers,
                                               wa_outbox.events, wa_outbox.audit, wa_outbox.receipts_pending,
                                               wa_outbox.api_keys, wa_outbox.console_logins TO wa_outbox_operator;
        GRANT SELECT ON wa_outbox.schema_migrations TO wa_outbox_operator;
    END IF;
END $$;

SELECT wa_outbox.grant_roles();

CREATE FUNCTION wa_outbox.enqueue_to_claim(
    p_org text,
    p_session text,
    p_kind text,
    p_payload jsonb,
    p_idempotency_key text DEFAULT NULL,
    p_run_at timestamptz DEFAULT now(),
    p_trace_parent text DEFAULT NULL,
    p_trace_state text DEFAULT NULL
) RETURNS TABLE (outbox_id bigint, wa_message_id text, replayed boolean, status text, created_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    v_result record;
BEGIN
    SELECT * INTO v_result FROM wa_outbox.enqueue_notify_after_commit(p_org, p_session, p_kind, p_payload, p_idempotency_key,
                                                                      p_run_at, p_trace_parent, p_trace_state) e;
    PERFORM set_config('wa_outbox.enqueued_job', CASE WHEN v_result.replayed THEN '' ELSE v_result.outbox_id::text END, true);
    RETURN QUERY SELECT v_result.outbox_id, v_result.wa_message_id, v_result.replayed, v_result.status, v_result.created_at;
END $$;
