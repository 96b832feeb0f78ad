-- Least privilege, and a stricter payload check.
--
-- 1. Three NOLOGIN roles, each with only the grants its process needs (README, *Database roles*):
--      wa_outbox_api       enqueue, read jobs, events, sessions and API keys; stamp a key's last use.
--                          No DELETE anywhere, no UPDATE of jobs or sessions, no DDL.
--      wa_outbox_worker    claim, complete, rescue, prune, receipts, session health, the operator API
--                          on its admin port. No API keys, no INSERT of jobs, no DDL.
--      wa_outbox_operator  the CLI: sessions, API keys, replay, cancel, prune, enqueue. No DDL.
--    Login users are made members of one of them (`CREATE ROLE NAME LOGIN PASSWORD '…' IN ROLE
--    wa_outbox_api`); `wa-outbox migrate` keeps running as the schema's owner. Roles are
--    cluster-wide while migrations run per database, often in several databases of one cluster at
--    once: each role is created only if missing, and a concurrent creation (duplicate_object, or
--    unique_violation on pg_authid) counts as created. A migrating user without CREATEROLE gets a
--    NOTICE and no roles; once an administrator has created them, `SELECT wa_outbox.grant_roles()`
--    (run by the owner) grants what is below. A later migration that adds a table or function
--    replaces grant_roles() with its grants added and calls it again.
-- 2. validate_payload: numbers are compared as numeric (1e400 was a cast error, not validation_error),
--    sentAt is bounded, a text or name of only whitespace is empty (not only of spaces), an edit's text is at most 65,536 characters like a send's, a vCard is
--    BEGIN:VCARD … END:VCARD with an FN or N line, and nothing nests deeper than 16 levels.

DO $$
DECLARE
    v_role text;
BEGIN
    FOREACH v_role IN ARRAY ARRAY['wa_outbox_api', 'wa_outbox_worker', 'wa_outbox_operator'] LOOP
        CONTINUE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_role);
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', v_role);
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN NULL;  -- created meanwhile, by another database's migration
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'role % not created: this user lacks CREATEROLE; create it and run SELECT wa_outbox.grant_roles()', v_role;
        END;
    END LOOP;
END $$;

CREATE FUNCTION wa_outbox.grant_roles() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'wa_outbox_api') THEN
        GRANT USAGE ON SCHEMA wa_outbox TO wa_outbox_api;
        GRANT SELECT ON wa_outbox.sessions, wa_outbox.jobs, wa_outbox.events, wa_outbox.audit, wa_outbox.api_keys,
                        wa_outbox.schema_migrations TO wa_outbox_api;
        GRANT INSERT ON wa_outbox.jobs, wa_outbox.events TO wa_outbox_api;
        GRANT SELECT, INSERT, UPDATE ON wa_outbox.lanes TO wa_outbox_api;
        GRANT UPDATE (last_used_at) ON wa_outbox.api_keys TO wa_outbox_api;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'wa_outbox_worker') THEN
        GRANT USAGE ON SCHEMA wa_outbox TO wa_outbox_worker;
        GRANT SELECT, UPDATE, DELETE ON wa_outbox.jobs TO wa_outbox_worker;
        GRANT SELECT, UPDATE ON wa_outbox.sessions TO wa_outbox_worker;
        GRANT SELECT, INSERT, DELETE ON wa_outbox.events, wa_outbox.audit TO wa_outbox_worker;
        GRANT SELECT, INSERT, UPDATE, DELETE ON wa_outbox.lanes, wa_outbox.workers, wa_outbox.receipts_pending TO wa_outbox_worker;
        GRANT SELECT ON wa_outbox.schema_migrations TO wa_outbox_worker;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'wa_outbox_operator') THEN
        GRANT USAGE ON SCHEMA wa_outbox TO wa_outbox_operator;
        GRANT SELECT, INSERT, UPDATE, DELETE ON wa_outbox.sessions, wa_outbox.jobs, wa_outbox.lanes, wa_outbox.workers,
                                               wa_outbox.events, wa_outbox.audit, wa_outbox.receipts_pending,
                                               wa_outbox.api_keys TO wa_outbox_operator;
        GRANT SELECT ON wa_outbox.schema_migrations TO wa_outbox_operator;
    END IF;
END $$;

SELECT wa_outbox.grant_roles();

-- Whether a text is empty or only ASCII whitespace (space, tab, line breaks, form feed, vertical
-- tab): btrim() alone trims spaces only, so a text of one newline passed as a message.
CREATE FUNCTION wa_outbox.is_blank(p_text text) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT btrim(p_text, E' \t\n\r\f' || chr(11)) = ''
$$;

-- The body of 0001's validate_payload with the changes listed above.
CREATE OR REPLACE FUNCTION wa_outbox.validate_payload(p_kind text, p_payload jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_type text;
    v_options jsonb;
    v_option jsonb;
    v_contact jsonb;
    v_vcard text;
    v_lat numeric;
    v_lon numeric;
    v_payload jsonb := p_payload;
BEGIN
    IF p_payload IS NULL OR jsonb_typeof(p_payload) <> 'object' THEN
        RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'payload must be a JSON object';
    END IF;
    IF jsonb_path_exists(p_payload, 'strict $.**{17}') THEN
        RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'payload nests deeper than 16 levels';
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
            IF jsonb_typeof(p_payload->'text') IS DISTINCT FROM 'string' OR wa_outbox.is_blank(p_payload->>'text') THEN
                RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'text is required for a text message and must not be empty';
            END IF;
            IF length(p_payload->>'text') > 65536 THEN
                RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'text is longer than 65536 characters';
            END IF;
        ELSIF v_type = 'poll' THEN
            IF jsonb_typeof(p_payload->'name') IS DISTINCT FROM 'string' OR wa_outbox.is_blank(p_payload->>'name') THEN
                RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'name (the poll question) is required for a poll';
            END IF;
            v_options := p_payload->'options';
            IF jsonb_typeof(v_options) IS DISTINCT FROM 'array' OR jsonb_array_length(v_options) NOT BETWEEN 2 AND 12 THEN
                RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'options must be an array of 2 to 12 answers';
            END IF;
            FOR v_option IN SELECT value FROM jsonb_array_elements(v_options) LOOP
                IF jsonb_typeof(v_option) <> 'string' OR wa_outbox.is_blank(v_option #>> '{}') THEN
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
            v_lat := (p_payload->'latitude')::numeric;
            v_lon := (p_payload->'longitude')::numeric;
            IF v_lat NOT BETWEEN -90 AND 90 OR v_lon NOT BETWEEN -180 AND 180 THEN
                RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'latitude must be within ±90 and longitude within ±180';
            END IF;
        ELSIF v_type = 'contact' THEN
            IF jsonb_typeof(p_payload->'contacts') IS DISTINCT FROM 'array' OR jsonb_array_length(p_payload->'contacts') NOT BETWEEN 1 AND 20 THEN
                RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'contacts must be an array of 1 to 20 contacts';
            END IF;
            FOR v_contact IN SELECT value FROM jsonb_array_elements(p_payload->'contacts') LOOP
                IF jsonb_typeof(v_contact->'name') IS DISTINCT FROM 'string' OR wa_outbox.is_blank(v_contact->>'name') THEN
                    RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'each contact needs a name';
                END IF;
                v_vcard := CASE WHEN jsonb_typeof(v_contact->'vcard') = 'string' THEN v_contact->>'vcard' END;
                IF v_vcard IS NOT NULL AND NOT (length(v_vcard) <= 65536
                        AND v_vcard ~ '^BEGIN:VCARD\r?\n' AND v_vcard ~ '\nEND:VCARD\s*$' AND v_vcard ~ '\n(FN|N)[;:]') THEN
                    RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'a vcard must run from a BEGIN:VCARD line to an END:VCARD line, with an FN or N line, in at most 65536 characters';
                END IF;
                IF NOT ((jsonb_typeof(v_contact->'phone') = 'string' AND v_contact->>'phone' ~ '^\+?[0-9 ()-]{5,30}$')
                        OR v_vcard IS NOT NULL) THEN
                    RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'each contact needs a phone number (digits, optional +) or a vcard starting with BEGIN:VCARD';
                END IF;
            END LOOP;
        ELSIF v_type IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'type is required: text, poll, location or contact';
        ELSE
            RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = format('unknown message type %s; supported types are text, poll, location and contact', v_type);
        END IF;
    ELSIF p_kind IN ('edit', 'revoke') THEN
        IF jsonb_typeof(p_payload->'messageId') IS DISTINCT FROM 'string' OR wa_outbox.is_blank(p_payload->>'messageId') THEN
            RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = format('messageId (the WhatsApp id of the message to %s) is required', p_kind);
        END IF;
        IF length(p_payload->>'messageId') > 256 THEN
            RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'messageId is longer than 256 characters';
        END IF;
        IF p_kind = 'edit' THEN
            IF p_payload ? 'type' AND p_payload->>'type' <> 'text' THEN
                RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'only text messages can be edited';
            END IF;
            IF jsonb_typeof(p_payload->'text') IS DISTINCT FROM 'string' OR wa_outbox.is_blank(p_payload->>'text') THEN
                RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'text (the new body) is required for an edit and must not be empty';
            END IF;
            IF length(p_payload->>'text') > 65536 THEN
                RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'text is longer than 65536 characters';
            END IF;
        ELSIF p_payload ? 'sender' AND p_payload->'sender' <> 'null'::jsonb AND p_payload->>'sender' <> '' THEN
            v_payload := jsonb_set(v_payload, '{sender}', to_jsonb(wa_outbox.normalize_jid(p_payload->>'sender', 'sender')));
        END IF;
        IF p_payload ? 'sentAt' AND (jsonb_typeof(p_payload->'sentAt') <> 'number'
                OR (p_payload->'sentAt')::numeric NOT BETWEEN 0 AND 32503680000) THEN
            RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = 'sentAt must be the original message''s time in Unix seconds';
        END IF;
    ELSE
        RAISE EXCEPTION USING ERRCODE = 'WA400', MESSAGE = format('unknown job kind %s; use send, edit or revoke', p_kind);
    END IF;
    RETURN v_payload;
END $$;
