-- Real engines: the engine's own message ids, delivery and read receipts, session health, and
-- sessions paused by WhatsApp (463).

-- What the engine calls a sent message. With wuzapi (and the simulator) the key id is the one we
-- chose; WAHA picks its own, so edits and revokes of a WAHA message address engine_message_id
-- (`true_CHAT_KEYID`), and receipts find their job by the key id.
ALTER TABLE wa_outbox.jobs
    ADD COLUMN engine_message_id text,
    ADD COLUMN engine_key_id     text,
    -- The furthest receipt recorded: 0 none, 1 delivered, 2 read. Receipts only move it forward,
    -- so a late or repeated webhook writes nothing.
    ADD COLUMN receipt           smallint NOT NULL DEFAULT 0 CHECK (receipt BETWEEN 0 AND 2);

CREATE INDEX jobs_engine_key ON wa_outbox.jobs (session_id, engine_key_id) WHERE engine_key_id IS NOT NULL;

-- Session events (restricted, active again) belong to no job.
ALTER TABLE wa_outbox.events
    ALTER COLUMN job_id DROP NOT NULL,
    ALTER COLUMN wa_message_id DROP NOT NULL;

ALTER TABLE wa_outbox.sessions
    -- As the engine last reported it: unknown (not asked yet), connected, connecting,
    -- disconnected. Only unknown and connected sessions are claimed.
    ADD COLUMN engine_status     text NOT NULL DEFAULT 'unknown'
        CHECK (engine_status IN ('unknown', 'connected', 'connecting', 'disconnected')),
    ADD COLUMN status_checked_at timestamptz NOT NULL DEFAULT '-infinity',
    -- Why the session is paused or restricted (WhatsApp's answer, or an operator's note).
    ADD COLUMN state_reason      text;

-- Receipts that arrived before their job's completion was written (an engine can acknowledge a
-- message within milliseconds), or for messages this outbox did not send. Workers apply them
-- once the job is there, and drop the ones nobody claims after a day.
CREATE TABLE wa_outbox.receipts_pending (
    session_id  text NOT NULL,
    key_id      text NOT NULL,
    level       smallint NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, key_id)
);
