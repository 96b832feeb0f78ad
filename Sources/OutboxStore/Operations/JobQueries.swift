import Foundation
import OutboxCore
import PostgresClient

/// Which jobs an operator means: every set field narrows the selection.
public struct JobFilter: Sendable {
    public var ids: [Int64]?
    public var states: [JobState]?
    public var org: String?
    public var session: String?
    public var chat: String?
    public var kind: JobKind?
    public var errorCode: String?
    public var createdAfter: Date?
    public var createdBefore: Date?
    public var finishedAfter: Date?
    public var finishedBefore: Date?
    /// Keyset paging, newest first: only jobs with a smaller id.
    public var beforeID: Int64?

    public init() {}

    /// ` AND …` conditions on alias `j`, each value bound as a parameter.
    func apply(to query: inout PostgresQuery) {
        if let ids { query.append(" AND j.id = ANY(", ids); query.append(")") }
        if let states {
            query.append(" AND j.state = ANY(", states.map(\.rawValue))
            // Only final jobs have finished_at: saying so lets the planner use the partial indexes on them.
            query.append(states.allSatisfy(\.isFinal) ? ") AND j.finished_at IS NOT NULL" : ")")
        }
        if let org { query.append(" AND j.org = ", org) }
        if let session { query.append(" AND j.session_id = ", session) }
        if let chat { query.append(" AND j.chat = ", chat) }
        if let kind { query.append(" AND j.kind = ", kind.rawValue) }
        if let errorCode { query.append(" AND j.error_code = ", errorCode) }
        if let createdAfter { query.append(" AND j.created_at >= ", createdAfter) }
        if let createdBefore { query.append(" AND j.created_at < ", createdBefore) }
        if let finishedAfter { query.append(" AND j.finished_at >= ", finishedAfter) }
        if let finishedBefore { query.append(" AND j.finished_at < ", finishedBefore) }
        if let beforeID { query.append(" AND j.id < ", beforeID) }
    }
}

/// One job as operators see it. The payload (the message body) is only filled in on request.
public struct JobSummary: Sendable, Codable, Equatable {
    public var id: Int64
    public var org: String
    public var session: String
    public var chat: String
    public var kind: String
    public var state: String
    public var waMessageId: String
    public var attempts: Int
    public var maxAttempts: Int
    public var errorCode: String?
    public var errorMessage: String?
    public var createdAt: Date
    public var finishedAt: Date?
    public var payload: String?
}

public struct AuditEntry: Sendable, Codable, Equatable {
    public var at: Date
    public var actor: String
    public var action: String
    public var reason: String
    public var details: String
}

public struct JobDetail: Sendable, Codable {
    public var job: JobSummary
    /// Every event of the job, including one `retrying` per failed attempt with its error.
    public var events: [StatusEvent]
    public var audit: [AuditEntry]
}

/// What a replay or cancel did.
public struct OperationReport: Sendable, Codable, Equatable {
    public var done: [Int64] = []
    /// Jobs left alone, with why.
    public var skipped: [Skipped] = []

    public struct Skipped: Sendable, Codable, Equatable {
        public var id: Int64
        public var reason: String
    }

    public init() {}
}

/// Operators' queries: list, show, replay, cancel.
public enum JobQueries {
    static let columns = """
        j.id, j.org, j.session_id, j.chat, j.kind, j.state, j.wa_message_id, j.attempts, j.max_attempts,
        j.error_code, j.error_message, j.created_at, j.finished_at
        """

    public static func list(_ filter: JobFilter, limit: Int = 100, includePayload: Bool = false, newestFirst: Bool = false,
                            in database: PostgresDatabase) async throws -> [JobSummary] {
        var query = PostgresQuery("SELECT \(columns), " + (includePayload ? "j.payload::text" : "NULL::text") + " FROM wa_outbox.jobs j WHERE true")
        filter.apply(to: &query)
        query.append(newestFirst ? " ORDER BY j.id DESC LIMIT " : " ORDER BY j.id LIMIT ", limit)
        return try await database.query(query).map(summary)
    }

    /// One job with its events and audit trail; with `org`, only if the job is that organization's.
    public static func show(_ id: Int64, org: String? = nil, includePayload: Bool = false, in database: PostgresDatabase) async throws -> JobDetail? {
        var filter = JobFilter()
        filter.ids = [id]
        filter.org = org
        guard let job = try await list(filter, limit: 1, includePayload: includePayload, in: database).first else { return nil }
        var eventQuery = PostgresQuery("SELECT " + StatusEvent.columns)
        eventQuery.append(" FROM wa_outbox.events WHERE job_id = ", id)
        eventQuery.append(" ORDER BY id")
        let events = try await database.query(eventQuery).map(StatusEvent.init(row:))
        let audit = try await database.query("""
            SELECT at, actor, action, reason, details::text FROM wa_outbox.audit WHERE job_id = \(id) ORDER BY id
            """).map { row in
            AuditEntry(at: try row.decode(at: 0), actor: try row.decode(at: 1), action: try row.decode(at: 2),
                       reason: try row.decode(at: 3), details: try row.decode(at: 4))
        }
        return JobDetail(job: job, events: events, audit: audit)
    }

    /// The ids a replay of `filter` would take, and the ones it would skip: only failed and
    /// canceled jobs are replayed, and an edit or revoke whose window has passed is skipped
    /// (WhatsApp would accept it and recipients would ignore it).
    public static func planReplay(_ filter: JobFilter, in database: PostgresDatabase) async throws -> OperationReport {
        var query = PostgresQuery("""
            SELECT j.id, j.state, j.kind,
                   CASE WHEN j.kind = 'send' THEN NULL
                        ELSE coalesce(o.sent_at, to_timestamp((j.payload->>'sentAt')::float8)) END AS sent_at
            FROM wa_outbox.jobs j
            LEFT JOIN LATERAL (
                SELECT s.sent_at FROM wa_outbox.jobs s
                WHERE j.kind <> 'send' AND s.session_id = j.session_id AND s.wa_message_id = j.wa_message_id AND s.kind = 'send'
                LIMIT 1
            ) o ON true
            WHERE true
            """)
        filter.apply(to: &query)
        query.append(" ORDER BY j.id")
        var report = OperationReport()
        let now = Date()
        for row in try await database.query(query) {
            let id: Int64 = try row.decode(at: 0)
            let state: String = try row.decode(at: 1)
            let kind: String = try row.decode(at: 2)
            let sentAt: Date? = try row.decode(at: 3)
            if state != JobState.failed.rawValue && state != JobState.canceled.rawValue {
                report.skipped.append(.init(id: id, reason: "job is \(state); only failed and canceled jobs are replayed"))
            } else if kind == "edit", let sentAt, now.timeIntervalSince(sentAt) > 15 * 60 {
                report.skipped.append(.init(id: id, reason: "edit_window_expired: the message was sent more than 15 minutes ago"))
            } else if kind == "revoke", let sentAt, now.timeIntervalSince(sentAt) > 48 * 3600 {
                report.skipped.append(.init(id: id, reason: "revoke_window_expired: the message was sent more than 48 hours ago"))
            } else {
                report.done.append(id)
            }
        }
        return report
    }

    /// Jobs replayed by one transaction of `replayAll`.
    public static let replayBatch = 500

    /// Replays `ids` in transactions of `replayBatch` jobs; `progress` gets the count so far after
    /// each. Returns the ids replayed.
    public static func replayAll(_ ids: [Int64], actor: String, reason: String, newMessageID: Bool, in database: PostgresDatabase,
                                 progress: (Int) -> Void = { _ in }) async throws -> [Int64] {
        var replayed: [Int64] = []
        for start in stride(from: 0, to: ids.count, by: replayBatch) {
            replayed += try await replay(Array(ids[start..<min(start + replayBatch, ids.count)]), actor: actor, reason: reason,
                                         newMessageID: newMessageID, in: database)
            progress(replayed.count)
        }
        return replayed
    }

    /// Puts failed or canceled jobs back in the queue with a fresh attempt budget, a `queued`
    /// event and an audit entry, in one transaction per call. A send keeps its WhatsApp message
    /// id unless `newMessageID` is set, so a message that did arrive is not delivered twice.
    /// Replayed jobs obey rate limits and chat order like any other.
    @discardableResult
    public static func replay(_ ids: [Int64], actor: String, reason: String, newMessageID: Bool, in database: PostgresDatabase) async throws -> [Int64] {
        guard !ids.isEmpty else { return [] }
        let rows = try await database.query("""
            WITH target AS (
                SELECT j.id FROM wa_outbox.jobs j
                WHERE j.id = ANY(\(ids)) AND j.state IN ('failed', 'canceled')
                ORDER BY j.id
                FOR UPDATE
            ),
            updated AS (
                UPDATE wa_outbox.jobs j SET
                    state = 'queued', attempts = 0, available_at = now(), deadline = now() + interval '24 hours',
                    error_code = NULL, error_message = NULL, finished_at = NULL, worker_id = NULL,
                    maybe_sent = j.maybe_sent AND NOT (\(newMessageID) AND j.kind = 'send'),
                    wa_message_id = CASE WHEN \(newMessageID) AND j.kind = 'send'
                        THEN '3EB0' || upper(substr(encode(sha256(convert_to(gen_random_uuid()::text, 'UTF8')), 'hex'), 1, 18))
                        ELSE j.wa_message_id END
                FROM target WHERE j.id = target.id
                RETURNING j.id, j.org, j.session_id, j.chat, j.kind, j.wa_message_id
            ),
            lanes_up AS (
                INSERT INTO wa_outbox.lanes AS l (session_id, chat, org, pending, busy, ready_at)
                SELECT session_id, chat, min(org), count(*), false, now() FROM updated GROUP BY session_id, chat
                ON CONFLICT (session_id, chat) DO UPDATE
                    SET pending = l.pending + EXCLUDED.pending,
                        ready_at = CASE WHEN l.busy THEN NULL ELSE least(l.ready_at, now()) END
            ),
            events AS (
                INSERT INTO wa_outbox.events (org, session_id, job_id, wa_message_id, kind, status)
                SELECT org, session_id, id, wa_message_id, kind, 'queued' FROM updated
            ),
            audit AS (
                INSERT INTO wa_outbox.audit (actor, action, job_id, org, reason, details)
                SELECT \(actor), 'replay', id, org, \(reason), jsonb_build_object('waMessageId', wa_message_id, 'newMessageId', \(newMessageID))
                FROM updated
            )
            SELECT id FROM updated
            """)
        try await database.query("SELECT pg_notify('wa_outbox_jobs', '')")
        return try rows.map { try $0.decode(Int64.self, at: 0) }
    }

    /// Cancels queued jobs, with a `canceled` event and an audit entry. A running job is in the
    /// middle of a dispatch and cannot be canceled; it is reported, not touched.
    ///
    /// Locks in the claim's order: the jobs' lanes first, then the jobs. The claim holds a lane
    /// and then writes its head job; a cancel that took the job first and then waited on the lane
    /// deadlocked with it, and PostgreSQL aborted the claim after `deadlock_timeout`. Now a cancel
    /// waits for a claim holding the lane to commit (and then leaves the job it took, reported as
    /// claimed), and a claim skips a lane a cancel holds.
    public static func cancel(_ filter: JobFilter, actor: String, reason: String, in database: PostgresDatabase) async throws -> OperationReport {
        var candidates = PostgresQuery("SELECT j.id, j.state FROM wa_outbox.jobs j WHERE true")
        filter.apply(to: &candidates)
        var report = OperationReport()
        var queued: [Int64] = []
        for row in try await database.query(candidates) {
            let id: Int64 = try row.decode(at: 0)
            switch try row.decode(String.self, at: 1) {
            case "queued": queued.append(id)
            case "running": report.skipped.append(.init(id: id, reason: "running: a dispatch is under way and cannot be stopped halfway; cancel it if it is retried"))
            case let state: report.skipped.append(.init(id: id, reason: "already \(state)"))
            }
        }
        guard !queued.isEmpty else { return report }
        let rows = try await database.withTransaction { connection in
            try await connection.query("""
                SELECT 1 FROM wa_outbox.lanes l
                WHERE (l.session_id, l.chat) IN (SELECT j.session_id, j.chat FROM wa_outbox.jobs j WHERE j.id = ANY(\(queued)))
                ORDER BY l.session_id, l.chat
                FOR UPDATE OF l
                """)
            return try await connection.query("""
                WITH updated AS (
                    UPDATE wa_outbox.jobs j SET state = 'canceled', finished_at = now(), error_code = 'canceled', error_message = \(reason)
                    WHERE j.id = ANY(\(queued)) AND j.state = 'queued'
                    RETURNING j.id, j.org, j.session_id, j.chat, j.kind, j.wa_message_id
                ),
                lanes_down AS (
                    UPDATE wa_outbox.lanes l SET
                        pending = l.pending - c.n,
                        ready_at = CASE WHEN l.busy OR l.pending - c.n <= 0 THEN NULL ELSE least(coalesce(l.ready_at, now()), now()) END
                    FROM (SELECT session_id, chat, count(*)::int AS n FROM updated GROUP BY session_id, chat) c
                    WHERE l.session_id = c.session_id AND l.chat = c.chat
                ),
                events AS (
                    INSERT INTO wa_outbox.events (org, session_id, job_id, wa_message_id, kind, status, error_code, error_message)
                    SELECT org, session_id, id, wa_message_id, kind, 'canceled', 'canceled', \(reason) FROM updated
                ),
                audit AS (
                    INSERT INTO wa_outbox.audit (actor, action, job_id, org, reason)
                    SELECT \(actor), 'cancel', id, org, \(reason) FROM updated
                )
                SELECT id FROM updated
                """)
        }
        report.done = try rows.map { try $0.decode(Int64.self, at: 0) }
        let canceled = Set(report.done)
        for id in queued where !canceled.contains(id) {
            report.skipped.append(.init(id: id, reason: "was claimed by a worker while canceling"))
        }
        return report
    }

    static func summary(_ row: PostgresRow) throws -> JobSummary {
        JobSummary(id: try row.decode(at: 0), org: try row.decode(at: 1), session: try row.decode(at: 2), chat: try row.decode(at: 3),
                   kind: try row.decode(at: 4), state: try row.decode(at: 5), waMessageId: try row.decode(at: 6),
                   attempts: try row.decode(at: 7), maxAttempts: try row.decode(at: 8), errorCode: try row.decode(at: 9),
                   errorMessage: try row.decode(at: 10), createdAt: try row.decode(at: 11), finishedAt: try row.decode(at: 12),
                   payload: try row.decode(at: 13))
    }
}
