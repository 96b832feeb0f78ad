-- The W3C trace context a job continues: the `traceparent` (and optional `tracestate`) of the
-- request that enqueued it, so the worker's dispatch span joins that request's trace. Both are
-- nullable and carry no default, so adding them rewrites nothing and costs a row nothing when unset;
-- no index names them, so a claim's update stays heap-only.
--
-- wa_outbox.enqueue gains two trailing parameters with defaults. A second overload beside the old
-- one would make every call with four to six arguments ambiguous, so the old one is dropped and
-- the function created again with the body of 0001 plus the two columns: callers keep calling it
-- as before. A later migration that changes enqueue starts from this one.
ALTER TABLE wa_outbox.jobs
    ADD COLUMN trace_parent text
        CHECK (trace_parent ~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'
               AND trace_parent !~ '^ff-' AND trace_parent !~ '-0{32}-' AND trace_parent !~ '-0{16}-'),
    ADD COLUMN trace_state text
        CHECK (trace_state IS NULL OR (length(trace_state) <= 512 AND trace_parent IS NOT NULL));

DROP FUNCTION wa_outbox.enqueue(text, text, text, jsonb, text, timestamptz);

CREATE FUNCTION wa_outbox.enqueue(
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
    v_payload jsonb;
    v_chat text;
    v_mid text;
    v_id bigint;
    v_created timestamptz;
    v_original record;
    v_sent_at timestamptz;
    v_max_age interval;
BEGIN
    IF p_org IS NULL OR p_org = '' THEN
        RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'org is required';
    END IF;
    IF p_idempotency_key IS NOT NULL THEN
        IF length(p_idempotency_key) NOT BETWEEN 1 AND 255 THEN
            RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'an idempotency key must be 1 to 255 characters';
        END IF;
        RETURN QUERY SELECT j.id, j.wa_message_id, true, j.state, j.created_at FROM wa_outbox.jobs j
            WHERE j.org = p_org AND j.idempotency_key = p_idempotency_key;
        IF FOUND THEN RETURN; END IF;
    END IF;
    IF p_trace_parent IS NOT NULL AND (p_trace_parent !~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'
            OR p_trace_parent ~ '^ff-' OR p_trace_parent ~ '-0{32}-' OR p_trace_parent ~ '-0{16}-') THEN
        RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'trace_parent must be a W3C traceparent: 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>';
    END IF;
    IF p_trace_state IS NOT NULL AND (p_trace_parent IS NULL OR length(p_trace_state) > 512) THEN
        RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'trace_state needs a trace_parent and takes at most 512 characters';
    END IF;

    PERFORM 1 FROM wa_outbox.sessions s WHERE s.id = p_session AND s.org = p_org;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'WA404', MESSAGE = format('session %s not found in organization %s', p_session, p_org);
    END IF;

    v_payload := wa_outbox.validate_payload(p_kind, p_payload);
    v_chat := v_payload->>'chat';

    IF p_kind = 'send' THEN
        -- Real clients' ids: 3EB0 and 18 upper-case hex digits. Chosen once, reused by every retry.
        v_mid := '3EB0' || upper(substr(encode(sha256(convert_to(gen_random_uuid()::text, 'UTF8')), 'hex'), 1, 18));
    ELSE
        v_mid := v_payload->>'messageId';
        v_max_age := CASE p_kind WHEN 'edit' THEN interval '15 minutes' ELSE interval '48 hours' END;
        SELECT j.state, j.sent_at, j.payload->>'type' AS type, j.chat INTO v_original FROM wa_outbox.jobs j
            WHERE j.session_id = p_session AND j.wa_message_id = v_mid AND j.kind = 'send' AND j.org = p_org
            ORDER BY j.id LIMIT 1;
        IF FOUND THEN
            IF v_original.chat <> v_chat THEN
                RAISE EXCEPTION USING ERRCODE = 'WA404', MESSAGE = format('message %s is not in chat %s', v_mid, v_chat);
            END IF;
            IF p_kind = 'edit' AND v_original.type <> 'text' THEN
                RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = format('message %s is a %s message; only text messages can be edited', v_mid, v_original.type);
            END IF;
            IF v_original.state IN ('failed', 'canceled') THEN
                RAISE EXCEPTION USING ERRCODE = 'WA404', MESSAGE = format('message %s was never sent (its job %s)', v_mid, v_original.state);
            END IF;
            v_sent_at := v_original.sent_at;
        ELSIF v_payload ? 'sentAt' THEN
            v_sent_at := to_timestamp((v_payload->>'sentAt')::double precision);
        ELSIF NOT (p_kind = 'revoke' AND v_payload ? 'sender') THEN
            RAISE EXCEPTION USING ERRCODE = 'WA404', MESSAGE = format(
                'message %s was not sent by session %s through the outbox; pass sentAt (Unix seconds) for a message sent another way', v_mid, p_session);
        END IF;
        IF v_sent_at IS NOT NULL AND now() - v_sent_at > v_max_age THEN
            IF p_kind = 'edit' THEN
                RAISE EXCEPTION USING ERRCODE = 'WA411', MESSAGE = format('message %s was sent at %s; WhatsApp allows edits for 15 minutes', v_mid, v_sent_at);
            ELSE
                RAISE EXCEPTION USING ERRCODE = 'WA412', MESSAGE = format('message %s was sent at %s; WhatsApp allows deleting for everyone for 48 hours', v_mid, v_sent_at);
            END IF;
        END IF;
    END IF;

    INSERT INTO wa_outbox.jobs AS j (org, session_id, chat, kind, wa_message_id, payload, idempotency_key, run_at, available_at, deadline,
                                     trace_parent, trace_state)
    VALUES (p_org, p_session, v_chat, p_kind, v_mid, v_payload, p_idempotency_key, p_run_at, p_run_at, p_run_at + interval '24 hours',
            p_trace_parent, p_trace_state)
    ON CONFLICT (org, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING j.id, j.created_at INTO v_id, v_created;

    IF v_id IS NULL THEN
        -- Another transaction enqueued this key first and has committed: return its job.
        RETURN QUERY SELECT j.id, j.wa_message_id, true, j.state, j.created_at FROM wa_outbox.jobs j
            WHERE j.org = p_org AND j.idempotency_key = p_idempotency_key;
        RETURN;
    END IF;

    INSERT INTO wa_outbox.lanes AS l (session_id, chat, org, pending, busy, ready_at)
    VALUES (p_session, v_chat, p_org, 1, false, p_run_at)
    ON CONFLICT (session_id, chat) DO UPDATE
        SET pending = l.pending + 1,
            ready_at = CASE WHEN l.busy THEN NULL ELSE least(l.ready_at, EXCLUDED.ready_at) END;

    INSERT INTO wa_outbox.events (org, session_id, job_id, wa_message_id, kind, status)
    VALUES (p_org, p_session, v_id, v_mid, p_kind, 'queued');

    RETURN QUERY SELECT v_id, v_mid, false, 'queued'::text, v_created;
END $$;
