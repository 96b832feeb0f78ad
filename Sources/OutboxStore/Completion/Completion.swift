import Foundation
import OutboxCore
import PostgresClient

/// The result of one attempt, to be written back.
public struct Completion: Sendable {
    public var jobID: Int64
    /// Fencing: the completion counts only for this claim of the job (`ClaimedJob.claim`), while
    /// this worker holds it; nil only for a job claimed before migration 0019 (the rescue's).
    public var claim: UUID?
    public var workerID: UUID
    public var outcome: Outcome
    /// For a success: what the engine calls the message (WAHA picks its own id).
    public var engineMessageID: String?

    public init(jobID: Int64, claim: UUID?, workerID: UUID, outcome: Outcome, engineMessageID: String? = nil) {
        self.jobID = jobID
        self.claim = claim
        self.workerID = workerID
        self.outcome = outcome
        self.engineMessageID = engineMessageID
    }
}

/// Writes many completions in one statement: job states, their `message.status` events (in the
/// order of `completions`, so a run's events follow its sends), their lanes and their sessions'
/// in-flight counts, all in one transaction. A lane is freed, and counted out of its session's
/// in-flight, by the completion of the last job of its run (`lanes.run_left`); the jobs of a run
/// may be completed over several statements. A deferral for a session-wide
/// reason (rate limit, session offline) also holds the whole session back until it may go again.
/// A deferral for `account_restricted` (WhatsApp answered 463) restricts the session: its jobs
/// stay queued until an operator sets it active again, and a session event says so.
///
/// Fencing: a row is written only while the job is still `running` under the same worker and
/// claim (`jobs.claim_token`, migration 0019). A worker that stalled past its lease, whose job was handed to another worker, finds
/// its late completion ignored; `complete` returns the ids that counted.
///
/// Each completion takes its job by one primary-key probe and checks the fence in the update's
/// own condition: when another transaction changed the job meanwhile, PostgreSQL waits for it and
/// rechecks the condition on the newest version, so no separate row lock (and its WAL record) is
/// needed. The plan must stay a probe per job whatever the statistics say, so the condition names
/// nothing the planner could estimate the jobs by alone: the input is materialized and carries the
/// state the fence expects (`i.running`). Written `j.state = 'running'`, statistics taken while
/// no job ran made the planner scan the jobs for running ones; with an index of running jobs
/// (`jobs_running`, until migration 0008) it walked that, 40 ms to 1 s per completion on a 1M-job
/// backlog. PlanTests holds the shape, in the plan made per execution and in a generic one.
public enum CompletionQuery {
    /// Writes `completions`; with `notifyingAfterCommit` the statement sends no NOTIFY (the caller
    /// signals a `WakeupNotifier` once it returns), so concurrent writers commit together. It runs
    /// the generic plan: left to choose, PostgreSQL planned most one-job completions anew, and the
    /// plan cost more than the statement (BENCHMARKS.md).
    @discardableResult
    public static func complete(_ completions: [Completion], on connection: PostgresConnection, notifyingAfterCommit: Bool = false) async throws -> Set<Int64> {
        try await write(completions, on: connection, notifyingAfterCommit: notifyingAfterCommit).counted
    }

    /// What a write did.
    public struct Written: Sendable {
        /// The jobs whose completion counted (the fence held).
        public var counted: Set<Int64> = []
        /// Whether it may have left a job claimable now that was not before: a lane it freed or
        /// requeued is ready, or a session it freed a slot of has a ready lane. A worker claims
        /// again only then (or polls), not after every write.
        public var readiedWork = false
    }

    public static func write(_ completions: [Completion], on connection: PostgresConnection, notifyingAfterCommit: Bool = false) async throws -> Written {
        guard !completions.isEmpty else { return Written() }
        let rows = try await connection.queryGenericPlan(query(completions, notifyingAfterCommit: notifyingAfterCommit))
        var written = Written()
        for row in rows {
            written.counted.insert(try row.decode(Int64.self, at: 0))
            written.readiedWork = try row.decode(Bool.self, at: 1)
        }
        return written
    }

    /// The statement with its parameters bound, one array element per completion.
    public static func query(_ completions: [Completion], notifyingAfterCommit: Bool = false) -> PostgresQuery {
        var ids: [Int64] = [], claims: [String?] = [], workers: [String] = [], outcomes: [String] = []
        var codes: [String?] = [], messages: [String?] = [], delays: [Int64] = []
        var engineIDs: [String?] = [], keyIDs: [String?] = []
        // A batch names few distinct UUIDs (one worker, one token per claim): each is spelled once.
        var spelled: [UUID: String] = [:]
        func text(_ id: UUID) -> String {
            if let text = spelled[id] { return text }
            let text = id.uuidString.lowercased()
            spelled[id] = text
            return text
        }
        for completion in completions {
            engineIDs.append(completion.engineMessageID)
            keyIDs.append(completion.engineMessageID.map(MessageKey.keyID(of:)))
            ids.append(completion.jobID)
            claims.append(completion.claim.map(text))
            workers.append(text(completion.workerID))
            switch completion.outcome {
            case .succeeded:
                outcomes.append("succeeded"); codes.append(nil); messages.append(nil); delays.append(0)
            case .failed(let code, let message):
                outcomes.append("failed"); codes.append(code.rawValue); messages.append(message); delays.append(0)
            case .retry(let delay, let code, let message):
                outcomes.append("retry"); codes.append(code.rawValue); messages.append(message); delays.append(delay.milliseconds)
            case .defer_(let delay, let code, let message):
                outcomes.append("defer"); codes.append(code.rawValue); messages.append(message); delays.append(delay.milliseconds)
            }
        }
        return PostgresQuery(notifyingAfterCommit ? silentSQL : sql, binds: [
            ids.postgresBind, claims.postgresBind, workers.postgresBind, outcomes.postgresBind, codes.postgresBind,
            messages.postgresBind, delays.postgresBind, engineIDs.postgresBind, keyIDs.postgresBind,
        ])
    }

    /// The statement. $1 … $9, one element per completion: job ids, claims, worker ids, outcomes
    /// (succeeded, failed, retry, defer), error codes, error messages, delays in ms, engine
    /// message ids, engine key ids.
    public static let sql = statement(input: "")

    /// The statement for a writer that notifies after its commit: reading the input sets
    /// `wa_outbox.notify` for the transaction, before the events' trigger runs at the statement's end.
    public static let silentSQL = statement(input: "\n        WHERE set_config('wa_outbox.notify', 'after_commit', true) IS NOT NULL")

    static func statement(input filter: String) -> String { """
            WITH input AS MATERIALIZED (
                SELECT *, 'running'::text AS running FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[],
                                     $5::text[], $6::text[], $7::int8[], $8::text[], $9::text[]) WITH ORDINALITY
                    AS i(id, claim, worker_id, outcome, error_code, error_message, delay_ms, engine_message_id, engine_key_id, n)\(filter)
            ),
            updated AS (
                UPDATE wa_outbox.jobs j SET
                    state = CASE i.outcome WHEN 'succeeded' THEN 'succeeded' WHEN 'failed' THEN 'failed' ELSE 'queued' END,
                    attempts = CASE WHEN i.outcome = 'defer' THEN j.attempts - 1 ELSE j.attempts END,
                    available_at = CASE WHEN i.outcome IN ('retry', 'defer')
                                        THEN now() + i.delay_ms * interval '1 millisecond' ELSE j.available_at END,
                    worker_id = NULL,
                    error_code = i.error_code,
                    error_message = i.error_message,
                    maybe_sent = j.maybe_sent OR coalesce(i.error_code IN ('timeout', 'worker_lost'), false),
                    maybe_sent_at = CASE WHEN i.error_code IN ('timeout', 'worker_lost') THEN now() ELSE j.maybe_sent_at END,
                    sent_at = CASE WHEN i.outcome = 'succeeded' THEN now() ELSE j.sent_at END,
                    finished_at = CASE WHEN i.outcome IN ('succeeded', 'failed') THEN now() END,
                    engine_message_id = coalesce(i.engine_message_id, j.engine_message_id),
                    engine_key_id = coalesce(i.engine_key_id, j.engine_key_id)
                FROM input i
                WHERE j.id = i.id AND j.state = i.running AND j.worker_id = i.worker_id::uuid
                  AND j.claim_token IS NOT DISTINCT FROM i.claim::uuid
                RETURNING j.id, j.org, j.session_id, j.chat, j.kind, j.wa_message_id, j.state, j.available_at,
                          j.attempts, i.outcome, i.error_code, i.error_message, i.n
            ),
            events AS (
                INSERT INTO wa_outbox.events (org, session_id, job_id, wa_message_id, kind, status, attempt, error_code, error_message)
                SELECT u.org, u.session_id, u.id, u.wa_message_id, u.kind,
                       CASE u.outcome
                           WHEN 'succeeded' THEN CASE u.kind WHEN 'send' THEN 'sent' WHEN 'edit' THEN 'edited' ELSE 'revoked' END
                           WHEN 'failed' THEN 'failed'
                           ELSE 'retrying' END,
                       u.attempts, u.error_code, u.error_message
                FROM updated u WHERE u.outcome <> 'defer'
                ORDER BY u.n
            ),
            lanes_done AS (
                UPDATE wa_outbox.lanes l SET
                    pending = l.pending - c.finished,
                    run_left = greatest(l.run_left - c.n, 0),
                    busy = l.run_left > c.n,
                    running_job = CASE WHEN l.run_left > c.n THEN l.running_job END,
                    run = CASE WHEN l.run_left > c.n THEN l.run END,
                    ready_at = CASE WHEN l.run_left > c.n OR l.pending - c.finished <= 0 THEN NULL
                                    WHEN c.requeued_at IS NOT NULL THEN c.requeued_at
                                    ELSE now() END
                FROM (SELECT session_id, chat, count(*)::int AS n,
                             count(*) FILTER (WHERE state IN ('succeeded', 'failed'))::int AS finished,
                             min(available_at) FILTER (WHERE state = 'queued') AS requeued_at
                      FROM updated GROUP BY session_id, chat) c
                WHERE l.session_id = c.session_id AND l.chat = c.chat
                RETURNING l.session_id, l.busy, l.ready_at
            ),
            sessions_done AS (
                UPDATE wa_outbox.sessions s SET
                    in_flight = greatest(s.in_flight - c.freed, 0),
                    not_before = greatest(s.not_before, coalesce(c.wait_until, '-infinity')),
                    state = CASE WHEN c.restricted IS NOT NULL THEN 'restricted' ELSE s.state END,
                    state_reason = coalesce(c.restricted, s.state_reason)
                FROM (SELECT session_id,
                             max(available_at) FILTER (WHERE outcome = 'defer' AND error_code IN ('rate_limited', 'session_unavailable')) AS wait_until,
                             max(error_message) FILTER (WHERE outcome = 'defer' AND error_code = 'account_restricted') AS restricted,
                             count(*) FILTER (WHERE freed)::int AS freed
                      FROM (SELECT session_id, available_at, outcome, error_code, error_message, false AS freed FROM updated
                            UNION ALL
                            SELECT session_id, NULL, NULL, NULL, NULL, true FROM lanes_done WHERE NOT busy) u
                      GROUP BY session_id) c
                JOIN wa_outbox.sessions before ON before.id = c.session_id
                WHERE s.id = c.session_id
                RETURNING s.id, s.org, c.restricted, before.state AS state_before, c.freed
            ),
            session_events AS (
                INSERT INTO wa_outbox.events (org, session_id, kind, status, error_code, error_message)
                SELECT d.org, d.id, 'session', 'restricted', 'account_restricted', d.restricted
                FROM sessions_done d WHERE d.restricted IS NOT NULL AND d.state_before <> 'restricted'
            )
            SELECT u.id, r.readied FROM updated u CROSS JOIN (
                SELECT EXISTS (SELECT FROM lanes_done WHERE ready_at <= now())
                       OR EXISTS (SELECT FROM sessions_done d WHERE d.freed > 0 AND EXISTS (
                           SELECT FROM wa_outbox.lanes l WHERE l.session_id = d.id AND l.ready_at <= now())) AS readied
            ) r
            """
    }
}

/// Hands the running jobs of dead workers to others.
///
/// A worker's lease is its row in `wa_outbox.workers`; its heartbeat renews it for all its jobs at
/// once. Running jobs are found through their lanes (the lane's `run`, or `running_job` for a lane
/// claimed before runs; busy lanes are indexed), never through an index on the job row: the claim
/// leaves every index on `jobs` untouched. A running job whose worker's lease has lapsed (or whose
/// worker row is gone) is requeued through the same fenced completion as any retry (`worker_lost`,
/// so its next attempt looks for the message first), or failed if that was its last attempt. Every
/// job of a dead worker's run is requeued so, not only the one it was sending: results of the jobs
/// before it may have waited unwritten in its buffer. Any number of workers may run this at once:
/// fencing lets one requeue count.
public enum RescueQuery {
    /// A job handed over from a dead worker: its dispatch lock, held under that worker's id, may go.
    public struct Rescued: Sendable {
        public var jobID: Int64
        public var sessionID: String
        public var messageID: String
        public var kind: JobKind
        public var workerID: UUID
    }

    public static func rescue(limit: Int = 1_000, on connection: PostgresConnection) async throws -> [Rescued] {
        let rows = try await connection.query("""
            SELECT j.id, j.attempts, j.worker_id, j.max_attempts, j.session_id, j.wa_message_id, j.kind, j.claim_token
            FROM wa_outbox.lanes l
            CROSS JOIN LATERAL unnest(coalesce(l.run, ARRAY[l.running_job])) AS r(id)
            CROSS JOIN LATERAL (
                SELECT j.id, j.attempts, j.worker_id, j.max_attempts, j.state, j.session_id, j.wa_message_id, j.kind, j.claim_token FROM wa_outbox.jobs j
                WHERE j.id = r.id
                OFFSET 0
            ) j
            WHERE l.busy AND j.state = 'running'
              AND NOT EXISTS (SELECT 1 FROM wa_outbox.workers w WHERE w.id = j.worker_id AND w.lease_expires_at >= now())
            LIMIT \(limit)
            """)
        var completions: [Completion] = []
        var candidates: [Int64: Rescued] = [:]
        for row in rows {
            candidates[try row.decode(at: 0)] = Rescued(jobID: try row.decode(at: 0), sessionID: try row.decode(at: 4),
                                                         messageID: try row.decode(at: 5), kind: JobKind(rawValue: try row.decode(at: 6)) ?? .send,
                                                         workerID: try row.decode(at: 2))
            let attempt: Int = try row.decode(at: 1)
            let maxAttempts: Int = try row.decode(at: 3)
            let message = "the worker holding this job stopped heartbeating"
            let outcome: Outcome = attempt >= maxAttempts
                ? .failed(code: .workerLost, message: message)
                : .retry(after: .zero, code: .workerLost, message: message)
            completions.append(Completion(jobID: try row.decode(at: 0), claim: try row.decode(UUID?.self, at: 7), workerID: try row.decode(at: 2), outcome: outcome))
        }
        let rescued = try await CompletionQuery.complete(completions, on: connection)
        try await connection.query("DELETE FROM wa_outbox.workers WHERE lease_expires_at < now() - interval '5 minutes'")
        return rescued.compactMap { candidates[$0] }
    }
}
