-- Wake-ups after commit, for the two busiest writers.
--
-- A transaction that has issued NOTIFY holds one database-wide lock from the start of its commit
-- to its end, WAL flush included (PostgreSQL keeps the notification queue in commit order), so
-- notifying writers commit one at a time and group commit is lost: every enqueue and every batch
-- of completions waited for the fsyncs of all the others (BENCHMARKS.md, "One NOTIFY lock").
--
-- A writer may now say, for the rest of its transaction, that it sends the wake-ups itself once
-- it has committed: `wa_outbox.notify = 'after_commit'`. The triggers then stay silent, and the
-- writer sends `pg_notify` in a transaction of its own, which writes no WAL and so holds the lock
-- only for a moment. Any other writer (an application enqueuing inside its own transaction, an
-- operator's replay) notifies from the triggers exactly as before.
CREATE OR REPLACE FUNCTION wa_outbox.notify_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('wa_outbox.notify', true) IS DISTINCT FROM 'after_commit' THEN
        PERFORM pg_notify('wa_outbox_jobs', '');
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION wa_outbox.notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('wa_outbox.notify', true) IS DISTINCT FROM 'after_commit' THEN
        PERFORM pg_notify('wa_outbox_events', '');
    END IF;
    RETURN NULL;
END $$;

-- wa_outbox.enqueue for a caller that notifies after its commit (the API): the same arguments and
-- result. Its transaction's later inserts stay silent too, so call it in a transaction of its own.
CREATE FUNCTION wa_outbox.enqueue_notify_after_commit(
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
BEGIN
    PERFORM set_config('wa_outbox.notify', 'after_commit', true);
    RETURN QUERY SELECT * FROM wa_outbox.enqueue(p_org, p_session, p_kind, p_payload, p_idempotency_key, p_run_at,
                                                 p_trace_parent, p_trace_state);
END $$;
