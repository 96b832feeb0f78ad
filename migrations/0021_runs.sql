-- Runs: a claim may take a lane's first few queued sends at once, to be sent one after another by
-- the same worker (issue #21). The lane stays busy until every job of the run is completed or
-- handed back, so per-chat order holds as before: nothing of the chat is claimed meanwhile, and
-- the worker sends the run in order, giving back the rest of it when one job must wait.
--
-- - run: the ids of the run's jobs (the rescue requeues every one still running when the worker
--   holding them died). running_job stays the run's first job, so busy = (running_job IS NOT NULL)
--   still holds and lanes_running still finds busy lanes.
-- - run_left: how many jobs of the run are not completed yet; the completion that brings it to
--   zero frees the lane and counts it out of its session's in_flight, which now counts runs (a
--   run is one send at a time). A lane busy before this migration has run_left 0 and is freed by
--   its one job's completion, as before.
ALTER TABLE wa_outbox.lanes ADD COLUMN run bigint[];
ALTER TABLE wa_outbox.lanes ADD COLUMN run_left integer NOT NULL DEFAULT 0 CHECK (run_left >= 0);
