-- Runs: a claim may take a lane's first few queued sends at once, to be sent one after another by
-- the same worker (issue #21). The lane stays busy until every job of the run is completed or
-- handed back, so per-chat order holds as before: nothing of the chat is claimed meanwhile, and
-- the worker sends the run in order, giving back the rest of it when one job must wait.
--
-- - run: the ids of the run's jobs when it has more than one (the rescue requeues every one still
--   running when the worker holding them died); NULL for a run of one, which running_job names.
--   running_job stays the run's first job, so busy = (running_job IS NOT NULL) still holds and
--   lanes_running still finds busy lanes.
-- - run_left: how many jobs of the run are not completed yet; the completion that brings it to
--   zero frees the lane and counts it out of its session's in_flight, which now counts runs (a
--   run is one send at a time). A lane busy before this migration holds one running job.
--
-- Stop the workers and API processes built before this migration first. The CHECK keeps busy and
-- run_left one fact, so their claims and completions are refused (they leave run_left alone):
-- they would count in_flight by jobs and rescue only a run's first job, freeing its lane while the
-- rest of the run still runs. Their running jobs are requeued by the rescue once they stop.
ALTER TABLE wa_outbox.lanes ADD COLUMN run bigint[];
ALTER TABLE wa_outbox.lanes ADD COLUMN run_left integer NOT NULL DEFAULT 0 CHECK (run_left >= 0);
UPDATE wa_outbox.lanes SET run_left = 1 WHERE busy;
ALTER TABLE wa_outbox.lanes ADD CONSTRAINT lanes_run_left_when_busy CHECK (busy = (run_left > 0));
