-- Grants for the operator console's table (migration 0015), as migration 0014 asks of a later
-- migration that adds a table: grant_roles() again, with them added.
--   wa_outbox_api, wa_outbox_worker  keep console logins (both serve /console) and write audit entries
--                                    (the API had only read them). The worker still cannot read API
--                                    keys: on its admin port the console takes the operator token.
-- The console's replay, cancel, pause and resume change jobs and sessions: the login of a process
-- that serves them to operators is also a member of wa_outbox_operator (docs/security.md).

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
