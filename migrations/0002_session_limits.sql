-- Per-session send limits and anti-ban pacing, enforced through Redis by every worker.
-- NULL means "the worker's configured default".

ALTER TABLE wa_outbox.sessions
    ADD COLUMN rate_per_second double precision CHECK (rate_per_second > 0),
    ADD COLUMN burst           integer CHECK (burst >= 1),
    -- Pacing: a random gap in [min_gap_ms, max_gap_ms] between two dispatches of the session.
    ADD COLUMN pacing          boolean,
    ADD COLUMN min_gap_ms      integer CHECK (min_gap_ms >= 0),
    ADD COLUMN max_gap_ms      integer CHECK (max_gap_ms >= 0),
    ADD COLUMN hourly_budget   integer CHECK (hourly_budget >= 1),
    ADD COLUMN daily_budget    integer CHECK (daily_budget >= 1),
    -- Set when a limit defers the session: the claim leaves it alone until then, so its other
    -- chats are not claimed only to be deferred again.
    ADD COLUMN not_before      timestamptz NOT NULL DEFAULT '-infinity';
