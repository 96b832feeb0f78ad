import Foundation
import OutboxCore
import PostgresClient

/// The claim: one statement that takes up to `limit` jobs for a worker.
///
/// How it keeps its promises:
/// - **Per-chat order, one at a time.** It picks lanes, not jobs: a lane is ready only when none of
///   its jobs is running, and the job it takes is the lane's head, the queued job with the lowest
///   (run_at, id), or a run from the head on (below). Claiming marks the lane busy until what it
///   took is finished or requeued.
/// - **A hot chat costs nothing.** A lane is one row however long its backlog, and its head is one
///   probe of `jobs_lane_queue` (unfinished jobs; in a lane that is not busy, all are queued); no
///   query walks a chat's backlog.
/// - **No index entry per claim.** The job update changes `state`, `attempts` and `worker_id`, which
///   no index on `jobs` mentions, so PostgreSQL rewrites the row in place on its page (heap-only)
///   when the page has room (fillfactor 45 leaves it, migration 0023). The lane records the running job
///   (`running_job`) for the rescue, in the lane update the claim makes anyway.
/// - **Per-session cap across all workers.** Candidate sessions are locked with `FOR UPDATE SKIP
///   LOCKED` and `in_flight < max_in_flight` is rechecked on the locked row, so two workers never
///   overfill one session; a worker skips sessions another is claiming instead of waiting.
/// - **No session starves another.** The candidate scan skips lanes of sessions that cannot run
///   (at their cap, paused, or waiting out a rate limit until `not_before`), so a session with
///   thousands of ready chats cannot fill the window. The price: it reads each skipped lane, so
///   with pacing on (most sessions waiting at any moment) a claim costs in proportion to the
///   waiting sessions' ready chats. Three scans driven by sessions instead were measured and
///   dropped (docs/benchmarks-analysis.md, *Noticed*): each cost the light-load latency or the drain more.
///   A runnable session's own ready chats do fill it: a campaign's thousands lie together in
///   `ready_at` order, so the scan (`$1` lanes) returns how many sessions it found, and a worker
///   widens it while that is too few (`CandidateScan`).
/// - **No double claim.** Lanes and sessions are row-locked by the claim and updated in the same
///   statement, so a job is handed to one worker at a time.
/// - **Only a job still queued.** The head is found in the statement's snapshot, and a transaction
///   that committed since may have taken it out of the queue: a cancel between the snapshot and
///   the lane lock leaves the lane ready. The job update rechecks the state on the newest row
///   version, so such a head is left alone; the lane and session are marked busy only for the jobs
///   the update took (they read its `RETURNING`), and the next claim finds the lane's real head.
///   The recheck is spelled `IS NOT DISTINCT FROM 'queued'` on purpose: written `= 'queued'` it
///   let the planner use `jobs_lane_queue` (then `WHERE state = 'queued'`), and with statistics
///   taken while nothing was queued it scanned every queued job instead of probing 500 by primary
///   key (100 ms against 9 ms per claim on 100,000 queued jobs).
/// - **The same plan whatever the statistics say.** Every step is driven by what the step before
///   found, through probes the planner cannot flatten into joins: the candidate scan walks ready
///   lanes in `ready_at` order and probes each one's session behind `OFFSET 0`; the candidates'
///   sessions are locked one primary-key probe each (a lateral `FOR UPDATE` is never flattened).
///   Written as joins, a never-analyzed or stale table (a new deployment, sessions just
///   re-created) let the planner scan every session instead: the candidate scan took 0.6 ms
///   instead of 0.2 ms, and the lock step became a nested loop of 445,000 comparisons, 76 ms
///   per claim on 1,000 sessions, halving a worker's throughput.
/// - **Runs of a chat's sends.** Where the session's limits allow it (`RunLimit`), a lane whose
///   head is a due send gives the claim up to `RunLimit.length` of its first queued jobs, as long
///   as each is a due send: a run, which the worker sends one after another and completes in order
///   (issue #21). The lane stays busy until the run's last job is completed (`lanes.run_left`), so
///   nothing else of the chat is claimed meanwhile.
/// - **Slots of a session.** Under the same limits, a session of one slot (`max_in_flight` 1, the
///   default), when free, takes up to a run's length of jobs from as many of its ready lanes as
///   that needs, oldest first: one lane's run, or one job each of ten one-job chats (a broadcast).
///   Each job comes back with its slot; the worker sends a slot's jobs one after another, so the
///   session still sends one message at a time. A lane is never split (its slot is where its head
///   falls), so a slot holds at most two runs' length. `in_flight` counts busy lanes, and a session
///   is claimed from only below its cap, so it takes its next slot once all of this one's chats are
///   done. A session of several slots takes one lane per free slot: counting busy chats against
///   its cap would keep its other slots idle behind one slow send. The rows come back slot by slot,
///   lane by lane, each lane's in run order; a claim's budget of jobs (`$8`) cuts in that order,
///   so a cut lane keeps its head.
/// A head that is not yet due (scheduled, or a stale ready time) is not taken; its lane's ready
/// time is moved to the head's time.
public enum ClaimQuery {
    /// The jobs a claim took, and the dispatch settings of their sessions as of the claim, so a
    /// worker needs no other read to dispatch them.
    public struct Batch: Sendable {
        /// Lane by lane, each lane's jobs in run order, a session's slots one after another.
        public var jobs: [ClaimedJob] = []
        public var sessions: [String: SessionRecord] = [:]
        /// The jobs as the worker sends them: each a slot of a session, its jobs one after another.
        public var runs: [[ClaimedJob]] = []
        /// The lanes (chats) the jobs came from.
        public var lanes = 0
        /// How many sessions the claim's candidate scan found ready, before locks and caps (0 for
        /// a claim of one job): few against the sessions asked for means their ready chats lie
        /// together in the scan's order, as a campaign's do, and a wider scan would find more.
        public var candidateSessions = 0
        /// How many ready lanes that scan returned: fewer than it was asked for means it saw every
        /// ready lane of a runnable session, and a wider scan would find nothing more.
        public var candidateLanes = 0
        /// The size of `wa_outbox.jobs` in 8 kB blocks when the claim ran (0 for a claim of one
        /// job): plans made while it was much smaller are stale (`PlanRenewal`).
        public var jobsTableBlocks: Int64 = 0
    }

    /// Takes up to `limit` lanes' heads, or runs where `runs` allows them, `jobs` at most in all
    /// (by default as many as `limit` full runs): lane by lane, so a cut run is the lane's last.
    /// `sessions`: how many sessions the claim expects to take from (by default `limit`);
    /// `candidates`: how many ready lanes it scans to find them (by default four per session).
    public static func claim(workerID: UUID, limit: Int, runs: RunLimit = .single, jobs: Int? = nil, sessions: Int? = nil,
                             candidates: Int? = nil, on connection: PostgresConnection) async throws -> Batch {
        try batch(from: try await connection.query(query(workerID: workerID, limit: limit, runs: runs, jobs: jobs, sessions: sessions, candidates: candidates)))
    }

    /// The claim's statement with its parameters (`claim` runs it; a worker sends it between
    /// `BEGIN` and `COMMIT`, one round trip). `token`: the claim's own, so a completion written for
    /// an earlier claim of the same job, even one rolled back, never counts for this one, and a
    /// claim whose answer is lost can be found (`lostClaim`).
    public static func query(workerID: UUID, token: UUID = UUID(), limit: Int, runs: RunLimit = .single, jobs: Int? = nil,
                             sessions: Int? = nil, candidates: Int? = nil) -> PostgresQuery {
        let jobs = jobs ?? limit * runs.length
        let candidates = candidates ?? 4 * max(1, sessions ?? limit)
        return PostgresQuery(sql, binds: [candidates.postgresBind, limit.postgresBind, workerID.postgresBind,
                                          token.postgresBind, runs.length.postgresBind,
                                          runs.pacedByDefault.postgresBind, runs.defaultBurst.postgresBind,
                                          jobs.postgresBind])
    }

    /// The jobs of a claim's rows: each a claimed job followed by its session's settings and the
    /// slot of the session it is sent in.
    public static func batch(from rows: PostgresRows) throws -> Batch {
        var batch = Batch()
        var slot = (session: "", number: -1)
        for row in rows {
            let job = ClaimedJob(
                id: try row.decode(at: 0), org: try row.decode(at: 1), sessionID: try row.decode(at: 2),
                chat: try row.decode(at: 3), kind: JobKind(rawValue: try row.decode(at: 4)) ?? .send,
                waMessageID: try row.decode(at: 5), payload: try row.decode(at: 6),
                attempt: try row.decode(at: 7), maxAttempts: try row.decode(at: 8), deadline: try row.decode(at: 9),
                maybeSent: try row.decode(at: 10),
                createdAt: try row.decode(at: 11),
                trace: JobTraceContext(traceParent: try row.decode(String?.self, at: 12), traceState: try row.decode(String?.self, at: 13)),
                maybeSentAgo: try row.decode(Int64?.self, at: 14).map { .milliseconds($0) },
                claim: try row.decode(UUID.self, at: 15)
            )
            let number: Int = try row.decode(at: 28)
            batch.candidateSessions = try row.decode(at: 29)
            batch.candidateLanes = try row.decode(at: 30)
            batch.jobsTableBlocks = try row.decode(at: 31)
            if let last = batch.jobs.last, last.sessionID == job.sessionID, last.chat == job.chat {} else { batch.lanes += 1 }
            if slot == (job.sessionID, number) {
                batch.runs[batch.runs.count - 1].append(job)
            } else {
                batch.runs.append([job])
                slot = (job.sessionID, number)
            }
            batch.jobs.append(job)
            if batch.sessions[job.sessionID] == nil {
                batch.sessions[job.sessionID] = try SessionRecord(id: job.sessionID, org: job.org, settingsFrom: row, at: 16)
            }
        }
        return batch
    }

    /// The statement. $1: candidate lanes to scan (4 × the sessions expected), $2: the limit (lanes), $3: the
    /// worker id, $4: this claim's token, $5 … $7: the `RunLimit` (length, paced by default, default
    /// burst), $8: jobs at most.
    /// Each row is a claimed job followed by its session's settings (`SessionRecord.settingsColumns`),
    /// its slot, and the sessions and lanes the candidate scan found.
    public static let sql = """
            WITH candidate_lanes AS (
                SELECT l.session_id FROM wa_outbox.lanes l
                CROSS JOIN LATERAL (
                    SELECT 1 FROM wa_outbox.sessions s
                    WHERE s.id = l.session_id
                      AND \(sessionCanRun)
                    OFFSET 0
                ) runnable
                WHERE l.ready_at <= now()
                ORDER BY l.ready_at
                LIMIT $1
            ),
            candidate_sessions AS (
                SELECT DISTINCT session_id FROM candidate_lanes
            ),
            sessions AS (
                SELECT s.id, s.free, s.run, CASE WHEN s.max_in_flight = 1 THEN s.run ELSE 1 END AS chats
                FROM (SELECT session_id FROM candidate_sessions ORDER BY session_id) c
                CROSS JOIN LATERAL (
                    SELECT s.id, s.max_in_flight, s.max_in_flight - s.in_flight AS free,
                           CASE WHEN coalesce(s.pacing, $6) THEN 1 ELSE greatest(1, least($5, coalesce(s.burst, $7))) END AS run
                    FROM wa_outbox.sessions s
                    WHERE s.id = c.session_id
                      AND \(sessionCanRun)
                    FOR UPDATE SKIP LOCKED
                ) s
            ),
            picked AS (
                SELECT l.session_id, l.chat, l.ready_at AS lane_ready, l.pending, h.id AS job_id, h.available_at, h.run_at, h.kind, s.run, s.free, s.chats
                FROM sessions s
                CROSS JOIN LATERAL (
                    SELECT w.chat FROM (
                        SELECT lane.chat, sum(least(lane.pending, s.run)) OVER (ORDER BY lane.ready_at ROWS UNBOUNDED PRECEDING)
                                          - least(lane.pending, s.run) AS before
                        FROM wa_outbox.lanes lane
                        WHERE lane.session_id = s.id AND lane.ready_at <= now()
                        ORDER BY lane.ready_at
                        LIMIT s.free * s.chats
                    ) w
                    WHERE w.before < s.free * s.run
                ) w
                CROSS JOIN LATERAL (
                    SELECT lane.session_id, lane.chat, lane.pending, lane.ready_at FROM wa_outbox.lanes lane
                    WHERE lane.session_id = s.id AND lane.chat = w.chat AND lane.ready_at <= now()
                    FOR UPDATE SKIP LOCKED
                ) l
                CROSS JOIN LATERAL (
                    \(laneHead)
                ) h
                LIMIT $2
            ),
            taken AS (
                SELECT p.session_id, p.chat, r.id, p.run, p.free, p.chats,
                       row_number() OVER (PARTITION BY p.session_id ORDER BY p.lane_ready, p.chat, r.run_at, r.id) - 1 AS k
                FROM picked p
                CROSS JOIN LATERAL (
                    SELECT p.job_id AS id, p.run_at
                    UNION ALL
                    SELECT f.id, f.run_at FROM (
                        \(runFollowers)
                    ) f
                    WHERE p.run > 1 AND p.pending > 1 AND p.kind = 'send'
                ) r
                WHERE p.available_at <= now()
            ),
            due AS (
                SELECT t.id AS job_id, t.k,
                       (min(t.k) OVER (PARTITION BY t.session_id, t.chat) / CASE WHEN t.chats > 1 THEN t.run ELSE 1 END)::int AS slot
                FROM taken t
                WHERE t.k < t.free * t.run
                ORDER BY t.session_id, t.k
                LIMIT $8
            ),
            not_due AS (
                UPDATE wa_outbox.lanes l SET ready_at = p.available_at
                FROM picked p
                WHERE p.available_at > now() AND l.session_id = p.session_id AND l.chat = p.chat
            ),
            \(takeDue(worker: "$3", token: "$4", scan: "(SELECT count(*) FROM candidate_sessions)::int, (SELECT count(*) FROM candidate_lanes)::int, (SELECT pg_relation_size('wa_outbox.jobs') / 8192)"))
            """

    /// A session `s` whose jobs may be claimed: active, connected (or not asked yet), out of its
    /// rate-limit wait and below its cap.
    static let sessionCanRun = """
        s.state = 'active' AND s.in_flight < s.max_in_flight AND s.not_before <= now() AND s.engine_status IN ('unknown', 'connected')
        """

    /// The head of lane `l`: its queued job with the lowest (run_at, id), one probe of `jobs_lane_queue`.
    static let laneHead = """
        SELECT j.id, j.available_at, j.run_at, j.kind FROM wa_outbox.jobs j
        WHERE j.session_id = l.session_id AND j.chat = l.chat AND j.finished_at IS NULL AND j.state = 'queued'
        ORDER BY j.run_at, j.id
        LIMIT 1
        """

    /// The rest of a run behind the head `p` (a due send): the lane's next queued jobs in order, up
    /// to `p.run - 1`, while each is a due send. One more probe of `jobs_lane_queue`, from the head on.
    static let runFollowers = """
        SELECT f.id, f.run_at FROM (
            SELECT j.id, j.run_at, bool_and(j.kind = 'send' AND j.available_at <= now())
                             OVER (ORDER BY j.run_at, j.id ROWS UNBOUNDED PRECEDING) AS sendable
            FROM wa_outbox.jobs j
            WHERE j.session_id = p.session_id AND j.chat = p.chat AND j.finished_at IS NULL AND j.state = 'queued'
              AND (j.run_at, j.id) > (p.run_at, p.job_id)
            ORDER BY j.run_at, j.id
            LIMIT p.run - 1
        ) f WHERE f.sendable
        """

    /// What every claim does with the jobs it found (a CTE `due` with a `job_id` column; `worker`
    /// and `token`: the parameters of the claimer's id and of the claim's token; `scan`: the last
    /// three columns, how many sessions and lanes its candidate scan found and the jobs table's
    /// size in blocks): takes those still
    /// queued, marks their lanes busy and counts them into their sessions' in-flight, and returns
    /// each with its session's settings.
    static func takeDue(worker: String, token: String, scan: String) -> String { """
            claimed AS (
                UPDATE wa_outbox.jobs j
                SET state = 'running', attempts = j.attempts + 1, claim_token = \(token), worker_id = \(worker)
                FROM due d
                WHERE j.id = d.job_id AND j.state IS NOT DISTINCT FROM 'queued'
                RETURNING j.id, j.org, j.session_id, j.chat, j.kind, j.wa_message_id, j.payload::text AS payload,
                          j.attempts, j.max_attempts, j.deadline, j.maybe_sent, j.created_at, j.trace_parent, j.trace_state,
                          (extract(epoch FROM now() - j.maybe_sent_at) * 1000)::int8 AS maybe_sent_ms_ago, j.claim_token, d.slot, d.k
            ),
            lanes_busy AS (
                UPDATE wa_outbox.lanes l SET busy = true, running_job = c.first, run = c.ids, run_left = c.n, ready_at = NULL
                FROM (SELECT session_id, chat, min(id) AS first, count(*)::int AS n,
                             CASE WHEN count(*) > 1 THEN array_agg(id) END AS ids
                      FROM claimed GROUP BY session_id, chat) c
                WHERE l.session_id = c.session_id AND l.chat = c.chat
                RETURNING l.session_id
            ),
            sessions_busy AS (
                UPDATE wa_outbox.sessions s SET in_flight = s.in_flight + c.n
                FROM (SELECT session_id, count(*)::int AS n FROM lanes_busy GROUP BY session_id) c
                WHERE s.id = c.session_id
            )
            SELECT c.id, c.org, c.session_id, c.chat, c.kind, c.wa_message_id, c.payload,
                   c.attempts, c.max_attempts, c.deadline, c.maybe_sent, c.created_at, c.trace_parent, c.trace_state, c.maybe_sent_ms_ago, c.claim_token,
                   \(SessionRecord.settingsColumns(of: "s")), c.slot, \(scan)
            FROM claimed c JOIN wa_outbox.sessions s ON s.id = c.session_id
            ORDER BY c.session_id, c.slot, c.k
            """
    }
}
