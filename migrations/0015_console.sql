-- The operator console (Sources/Console, served at /console): its logins, a wider audit trail, and
-- the indexes that keep its pages fast with a million jobs in the table.

-- A console login: the SHA-256 of the cookie's random token (the token itself is never stored),
-- who logged in (the audit actor), the organization an API key limits them to (NULL: the admin
-- token, every organization), the key (a revoked or deleted key ends its logins), and the CSRF
-- token every form of the login carries.
CREATE TABLE wa_outbox.console_logins (
    token_hash bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    operator   text NOT NULL CHECK (operator <> ''),
    org        text,
    api_key_id bigint REFERENCES wa_outbox.api_keys (id) ON DELETE CASCADE,
    csrf       text NOT NULL CHECK (length(csrf) >= 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);

-- The console audits more than replays and cancels: opening a message body, pausing and resuming
-- a session (which belongs to no job).
ALTER TABLE wa_outbox.audit DROP CONSTRAINT audit_action_check;
ALTER TABLE wa_outbox.audit ADD CONSTRAINT audit_action_check
    CHECK (action IN ('replay', 'cancel', 'view_body', 'pause', 'resume'));
ALTER TABLE wa_outbox.audit ALTER COLUMN job_id DROP NOT NULL;
ALTER TABLE wa_outbox.audit ADD COLUMN session_id text;

-- Failed and canceled jobs by organization, error code and session: the failures page groups
-- them and the overview counts them with index-only scans, for one organization or all. Only
-- finished jobs with an error are in it (a few percent of the table).
-- It names error_code, which a completion that schedules a retry also writes: those updates are
-- no longer heap-only (a claim's still is: it changes state, attempts and worker_id, none indexed).
CREATE INDEX jobs_failures ON wa_outbox.jobs (org, error_code, session_id, id)
    WHERE finished_at IS NOT NULL AND error_code IS NOT NULL;

-- Events by time for the overview's chart (the last hour): a BRIN index, a few pages for millions
-- of rows, cheap on an append-only table whose rows arrive in time order.
CREATE INDEX events_created_brin ON wa_outbox.events USING brin (created_at);
