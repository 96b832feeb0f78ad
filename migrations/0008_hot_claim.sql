-- The claim rewrites a job row in place (a HOT update): no index entry is written for it.
--
-- A job changes three times: enqueued, claimed, finished. The claim sets state, attempts and
-- worker_id; while state and worker_id were indexed (the predicates of jobs_lane_queue and
-- jobs_running, the key of jobs_running), PostgreSQL had to write a new entry into every index
-- on jobs for the claim's row version (primary key, jobs_message, jobs_running), and later clean
-- them up. Now no index on jobs mentions a column the claim changes, so the claim's new row
-- version goes on the same page, found through the old one's index entries.
--
-- - jobs_lane_queue holds unfinished jobs (queued and running) instead of queued ones. A lane
--   whose job is running is not ready, so the claim never looks at its head meanwhile; once the
--   job finishes, finished_at takes it out.
-- - A dead worker's jobs are found through their lanes: the lane of a running job names it.
--   running_job is set by the claim and cleared by the completion, in the lane updates both
--   already make; the CHECK keeps busy and running_job one fact.
--
-- Upgrade with every worker stopped. A worker built before this migration has its claims and
-- completions refused by the CHECK (it would set busy without running_job, or clear one and not
-- the other), so it sends nothing rather than hide a running job from the rescue; the jobs it
-- was running are requeued by the rescue once it stops.
ALTER TABLE wa_outbox.lanes ADD COLUMN running_job bigint;

UPDATE wa_outbox.lanes l SET running_job = j.id
FROM wa_outbox.jobs j
WHERE l.busy AND j.session_id = l.session_id AND j.chat = l.chat AND j.state = 'running';

ALTER TABLE wa_outbox.lanes ADD CONSTRAINT lanes_running_job_when_busy CHECK (busy = (running_job IS NOT NULL));

CREATE INDEX lanes_running ON wa_outbox.lanes (running_job) WHERE busy;

DROP INDEX wa_outbox.jobs_running;
DROP INDEX wa_outbox.jobs_lane_queue;
CREATE INDEX jobs_lane_queue ON wa_outbox.jobs (session_id, chat, run_at, id) WHERE finished_at IS NULL;
