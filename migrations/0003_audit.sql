-- Who did what to which job, and why: operators' replays and cancels.
CREATE TABLE wa_outbox.audit (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    actor   text NOT NULL,
    action  text NOT NULL CHECK (action IN ('replay', 'cancel')),
    job_id  bigint NOT NULL,
    org     text NOT NULL,
    reason  text NOT NULL,
    details jsonb NOT NULL DEFAULT '{}'
);

CREATE INDEX audit_job ON wa_outbox.audit (job_id);
-- Finished jobs in age order, for pruning and for listing failures by time.
CREATE INDEX jobs_finished ON wa_outbox.jobs (finished_at) WHERE finished_at IS NOT NULL;
