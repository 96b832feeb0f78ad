-- Autovacuum for queue tables. Every job updates its row twice and its lane three times, and
-- pruning deletes finished jobs and events in small batches all day: the dead rows must be
-- vacuumed soon, or the tables grow until a vacuum catches up.
--
-- jobs and lanes already vacuum after 2% of their rows are dead (0001); events waited for the
-- default 20%, and every table's autovacuum ran at the default cost limit (200), slower than a
-- busy worker fleet dirties pages. In the bloat benchmark (6 x 100,000 jobs through enqueue,
-- pruning every 2 s) these settings took the peaks from 273 to 200 MB (jobs), 116 to 110 MB
-- (events, now level from the third cycle on) and 52 to 33 MB (lanes), in the same total time.
-- Nothing is vacuumed by the application itself: no lock is held while it runs.

ALTER TABLE wa_outbox.jobs SET (autovacuum_vacuum_cost_limit = 2000);

ALTER TABLE wa_outbox.events SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_limit = 2000
);

ALTER TABLE wa_outbox.lanes SET (
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_limit = 2000
);
