-- The outbox: sessions, jobs, the lanes that order them per chat, live workers, and the
-- append-only message.status event log. Everything lives in the wa_outbox schema.
-- ARCHITECTURE.md explains how these tables enforce the guarantees.

CREATE SCHEMA IF NOT EXISTS wa_outbox;

-- Sessions: one WhatsApp account, owned by one organization, driven through one engine.
-- in_flight counts this session's running jobs; the claim locks the row and checks it against
-- max_in_flight, so the cap holds across every worker process.
CREATE TABLE wa_outbox.sessions (
    id             text PRIMARY KEY,
    org            text NOT NULL,
    engine         text NOT NULL CHECK (engine IN ('sim', 'wuzapi', 'waha')),
    engine_url     text,
    -- Where the engine credential is found: 'env:VAR' or 'file:/path'. Never the secret itself.
    credential_ref text,
    state          text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'paused', 'restricted')),
    max_in_flight  integer NOT NULL DEFAULT 1 CHECK (max_in_flight BETWEEN 1 AND 1000),
    in_flight      integer NOT NULL DEFAULT 0 CHECK (in_flight >= 0),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 70);

CREATE INDEX sessions_org ON wa_outbox.sessions (org);

-- Jobs: one send, edit or revoke. Rows are narrow; bodies stay in payload.
CREATE TABLE wa_outbox.jobs (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org             text NOT NULL,
    session_id      text NOT NULL,
    chat            text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('send', 'edit', 'revoke')),
    state           text NOT NULL DEFAULT 'queued'
                    CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'canceled')),
    -- send: the id the new message is sent with (chosen here, reused by every retry);
    -- edit and revoke: the id of the message they act on.
    wa_message_id   text NOT NULL,
    payload         jsonb NOT NULL,
    idempotency_key text,
    -- Order within a chat is (run_at, id): enqueue order, unless a send is scheduled later.
    run_at          timestamptz NOT NULL DEFAULT now(),
    -- The earliest next dispatch: moves forward on backoff and on deferral.
    available_at    timestamptz NOT NULL DEFAULT now(),
    -- Deferrals (session offline, rate limited) give up here with a clear error.
    deadline        timestamptz NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    max_attempts    integer NOT NULL DEFAULT 8 CHECK (max_attempts BETWEEN 1 AND 100),
    -- The worker holding a running job; its lease is the worker's row in wa_outbox.workers.
    worker_id       uuid,
    error_code      text,
    error_message   text,
    -- When WhatsApp accepted the send: edit and revoke windows count from here.
    sent_at         timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
) WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);

-- An idempotency key is unique per organization.
CREATE UNIQUE INDEX jobs_idempotency ON wa_outbox.jobs (org, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- The head of a lane in one index probe, however long the lane's backlog.
CREATE INDEX jobs_lane_queue ON wa_outbox.jobs (session_id, chat, run_at, id) WHERE state = 'queued';
-- A dead worker's jobs.
CREATE INDEX jobs_running ON wa_outbox.jobs (worker_id) WHERE state = 'running';
-- The message an edit or revoke acts on, and receipts by message id.
CREATE INDEX jobs_message ON wa_outbox.jobs (session_id, wa_message_id);

-- Lanes: one row per (session, chat) that has or had work. The claim reads lanes, never a chat's
-- backlog: a lane is ready when it has no running job and its head may be due, and its head is one
-- probe of jobs_lane_queue. A chat with 100,000 queued jobs is one lane.
CREATE TABLE wa_outbox.lanes (
    session_id text NOT NULL,
    chat       text NOT NULL,
    org        text NOT NULL,
    -- Queued and running jobs in the lane. Changed only together with the jobs themselves.
    pending    integer NOT NULL DEFAULT 0 CHECK (pending >= 0),
    -- A job of this lane is running: the lane waits for it (one at a time per chat).
    busy       boolean NOT NULL DEFAULT false,
    -- Not busy and has pending jobs: when the head may be due. NULL otherwise.
    ready_at   timestamptz,
    PRIMARY KEY (session_id, chat)
) WITH (fillfactor = 50, autovacuum_vacuum_scale_factor = 0.02);

CREATE INDEX lanes_ready ON wa_outbox.lanes (ready_at) WHERE ready_at IS NOT NULL;
CREATE INDEX lanes_session_ready ON wa_outbox.lanes (session_id, ready_at) WHERE ready_at IS NOT NULL;

-- Live workers. A worker's heartbeat renews lease_expires_at for all its jobs in one row write;
-- when it lapses, the worker's running jobs are handed to others.
CREATE TABLE wa_outbox.workers (
    id               uuid PRIMARY KEY,
    name             text NOT NULL,
    host             text NOT NULL,
    pid              integer NOT NULL,
    started_at       timestamptz NOT NULL DEFAULT now(),
    heartbeat_at     timestamptz NOT NULL DEFAULT now(),
    lease_expires_at timestamptz NOT NULL,
    in_flight        integer NOT NULL DEFAULT 0
) WITH (fillfactor = 50);

-- message.status events, append-only. tx lets a reader by cursor never skip an event that
-- commits after one with a higher id: read only rows whose transaction is older than every
-- transaction still running (see wa_outbox.events_after).
CREATE TABLE wa_outbox.events (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tx            xid8 NOT NULL DEFAULT pg_current_xact_id(),
    org           text NOT NULL,
    session_id    text NOT NULL,
    job_id        bigint NOT NULL,
    wa_message_id text NOT NULL,
    kind          text NOT NULL,
    status        text NOT NULL,
    attempt       integer NOT NULL DEFAULT 0,
    error_code    text,
    error_message text,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX events_org ON wa_outbox.events (org, id);
CREATE INDEX events_job ON wa_outbox.events (job_id);

-- One NOTIFY per statement (and PostgreSQL folds identical ones within a transaction), never one
-- per row. They are wake-up hints; readers poll as well.
CREATE FUNCTION wa_outbox.notify_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('wa_outbox_jobs', '');
    RETURN NULL;
END $$;

CREATE FUNCTION wa_outbox.notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('wa_outbox_events', '');
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_notify AFTER INSERT ON wa_outbox.jobs
    FOR EACH STATEMENT EXECUTE FUNCTION wa_outbox.notify_jobs();
CREATE TRIGGER events_notify AFTER INSERT ON wa_outbox.events
    FOR EACH STATEMENT EXECUTE FUNCTION wa_outbox.notify_events();

-- Events after a cursor, in id order, never skipping one that commits late.
CREATE FUNCTION wa_outbox.events_after(p_org text, p_after bigint, p_limit integer DEFAULT 500)
RETURNS SETOF wa_outbox.events LANGUAGE sql STABLE AS $$
    SELECT e.* FROM wa_outbox.events e
    WHERE (p_org IS NULL OR e.org = p_org)
      AND e.id > p_after
      AND e.tx < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY e.id
    LIMIT p_limit
$$;

-- Stable error codes, raised with these SQLSTATEs so every language can branch on them:
--   WA400 validation_error   WA404 not_found   WA501 not_implemented
--   WA411 edit_window_expired   WA412 revoke_window_expired
-- The message is written for a person.

-- A JID, normalized: '@c.us' (WAHA's spelling) becomes '@s.whatsapp.net'.
CREATE FUNCTION wa_outbox.normalize_jid(p_jid text, p_field text DEFAULT 'chat') RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v text := lower(btrim(p_jid));
BEGIN
    IF p_jid IS NULL OR v = '' THEN
        RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = format('%s is required: a JID such as 4915112345678@s.whatsapp.net or 1203630@g.us', p_field);
    END IF;
    IF v ~ '^[0-9]{5,20}@c\.us$' THEN
        RETURN replace(v, '@c.us', '@s.whatsapp.net');
    END IF;
    IF v ~ '^[0-9]{5,20}@s\.whatsapp\.net$'
       OR v ~ '^[0-9]{5,20}(-[0-9]{1,20})?@g\.us$'
       OR v ~ '^[0-9]{1,30}@lid$'
       OR v ~ '^[0-9]{1,30}@newsletter$' THEN
        RETURN v;
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = format(
        '%s %s is not a valid JID; use NUMBER@s.whatsapp.net (or NUMBER@c.us), ID@g.us, ID@lid or ID@newsletter', p_field, p_jid);
END $$;

-- Checks a payload for its kind and returns it normalized (chat JID rewritten). Raises WA400 or
-- WA501 with a message that says what to fix.
CREATE FUNCTION wa_outbox.validate_payload(p_kind text, p_payload jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_type text;
    v_text text;
    v_options jsonb;
    v_option jsonb;
    v_contact jsonb;
    v_lat double precision;
    v_lon double precision;
    v_payload jsonb := p_payload;
BEGIN
    IF p_payload IS NULL OR jsonb_typeof(p_payload) <> 'object' THEN
        RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'payload must be a JSON object';
    END IF;
    IF jsonb_typeof(p_payload->'chat') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'chat is required: a JID such as 4915112345678@s.whatsapp.net';
    END IF;
    v_payload := jsonb_set(v_payload, '{chat}', to_jsonb(wa_outbox.normalize_jid(p_payload->>'chat')));

    IF p_kind = 'send' THEN
        v_type := p_payload->>'type';
        IF v_type IN ('image', 'video', 'audio', 'document', 'sticker') THEN
            RAISE EXCEPTION USING ERRCODE = 'WA501', MESSAGE = format('%s messages are not implemented yet; supported types are text, poll, location and contact', v_type);
        ELSIF v_type = 'text' THEN
            IF jsonb_typeof(p_payload->'text') IS DISTINCT FROM 'string' OR btrim(p_payload->>'text') = '' THEN
                RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'text is required for a text message and must not be empty';
            END IF;
            IF length(p_payload->>'text') > 65536 THEN
                RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'text is longer than 65536 characters';
            END IF;
        ELSIF v_type = 'poll' THEN
            IF jsonb_typeof(p_payload->'name') IS DISTINCT FROM 'string' OR btrim(p_payload->>'name') = '' THEN
                RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'name (the poll question) is required for a poll';
            END IF;
            v_options := p_payload->'options';
            IF jsonb_typeof(v_options) IS DISTINCT FROM 'array' OR jsonb_array_length(v_options) NOT BETWEEN 2 AND 12 THEN
                RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'options must be an array of 2 to 12 answers';
            END IF;
            FOR v_option IN SELECT value FROM jsonb_array_elements(v_options) LOOP
                IF jsonb_typeof(v_option) <> 'string' OR btrim(v_option #>> '{}') = '' THEN
                    RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'each poll option must be a non-empty string';
                END IF;
            END LOOP;
            IF (SELECT count(DISTINCT value) FROM jsonb_array_elements(v_options)) <> jsonb_array_length(v_options) THEN
                RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'poll options must be distinct';
            END IF;
            IF p_payload ? 'multipleAnswers' AND jsonb_typeof(p_payload->'multipleAnswers') <> 'boolean' THEN
                RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'multipleAnswers must be true or false';
            END IF;
        ELSIF v_type = 'location' THEN
            IF jsonb_typeof(p_payload->'latitude') IS DISTINCT FROM 'number' OR jsonb_typeof(p_payload->'longitude') IS DISTINCT FROM 'number' THEN
                RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'latitude and longitude are required numbers for a location';
            END IF;
            v_lat := (p_payload->>'latitude')::double precision;
            v_lon := (p_payload->>'longitude')::double precision;
            IF v_lat NOT BETWEEN -90 AND 90 OR v_lon NOT BETWEEN -180 AND 180 THEN
                RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'latitude must be within ±90 and longitude within ±180';
            END IF;
        ELSIF v_type = 'contact' THEN
            IF jsonb_typeof(p_payload->'contacts') IS DISTINCT FROM 'array' OR jsonb_array_length(p_payload->'contacts') NOT BETWEEN 1 AND 20 THEN
                RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'contacts must be an array of 1 to 20 contacts';
            END IF;
            FOR v_contact IN SELECT value FROM jsonb_array_elements(p_payload->'contacts') LOOP
                IF jsonb_typeof(v_contact->'name') IS DISTINCT FROM 'string' OR btrim(v_contact->>'name') = '' THEN
                    RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'each contact needs a name';
                END IF;
                IF NOT ((jsonb_typeof(v_contact->'phone') = 'string' AND v_contact->>'phone' ~ '^\+?[0-9 ()-]{5,30}$')
                        OR (jsonb_typeof(v_contact->'vcard') = 'string' AND v_contact->>'vcard' LIKE 'BEGIN:VCARD%')) THEN
                    RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'each contact needs a phone number (digits, optional +) or a vcard starting with BEGIN:VCARD';
                END IF;
            END LOOP;
        ELSIF v_type IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'type is required: text, poll, location or contact';
        ELSE
            RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = format('unknown message type %s; supported types are text, poll, location and contact', v_type);
        END IF;
    ELSIF p_kind IN ('edit', 'revoke') THEN
        IF jsonb_typeof(p_payload->'messageId') IS DISTINCT FROM 'string' OR btrim(p_payload->>'messageId') = '' THEN
            RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = format('messageId (the WhatsApp id of the message to %s) is required', p_kind);
        END IF;
        IF p_kind = 'edit' THEN
            IF p_payload ? 'type' AND p_payload->>'type' <> 'text' THEN
                RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'only text messages can be edited';
            END IF;
            IF jsonb_typeof(p_payload->'text') IS DISTINCT FROM 'string' OR btrim(p_payload->>'text') = '' THEN
                RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'text (the new body) is required for an edit and must not be empty';
            END IF;
        ELSIF p_payload ? 'sender' AND p_payload->'sender' <> 'null'::jsonb AND p_payload->>'sender' <> '' THEN
            v_payload := jsonb_set(v_payload, '{sender}', to_jsonb(wa_outbox.normalize_jid(p_payload->>'sender', 'sender')));
        END IF;
        IF p_payload ? 'sentAt' AND jsonb_typeof(p_payload->'sentAt') <> 'number' THEN
            RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'sentAt must be the original message''s time in Unix seconds';
        END IF;
    ELSE
        RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = format('unknown job kind %s; use send, edit or revoke', p_kind);
    END IF;
    RETURN v_payload;
END $$;

-- Enqueues one job. Callable from any language, and inside the caller's own transaction (the
-- transactional-outbox pattern): the job exists exactly when the caller's transaction commits.
-- With an idempotency key already used by the organization, returns the original job with
-- replayed = true and writes nothing.
CREATE FUNCTION wa_outbox.enqueue(
    p_org text,
    p_session text,
    p_kind text,
    p_payload jsonb,
    p_idempotency_key text DEFAULT NULL,
    p_run_at timestamptz DEFAULT now()
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

    INSERT INTO wa_outbox.jobs AS j (org, session_id, chat, kind, wa_message_id, payload, idempotency_key, run_at, available_at, deadline)
    VALUES (p_org, p_session, v_chat, p_kind, v_mid, v_payload, p_idempotency_key, p_run_at, p_run_at, p_run_at + interval '24 hours')
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
