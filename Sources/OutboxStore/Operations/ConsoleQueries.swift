import Foundation
import PostgresClient

/// A count that stops at a limit: exact below it; above it, at least `limit` (and, for the whole
/// table, the planner's estimate). The console never counts a million rows on a refresh.
public struct BoundedCount: Sendable, Equatable {
    public var value: Int
    public var exact: Bool
    /// The planner's estimate (pg_stats × reltuples), when the count passed its limit.
    public var estimate: Int?
}

/// What the console's overview shows, for one organization or all.
public struct ConsoleOverview: Sendable {
    /// Jobs by state: queued and running exactly (from the lanes), finished ones bounded.
    public var byState: [(state: String, count: BoundedCount)]
    /// Age of the oldest job at the head of a lane (0 when nothing waits).
    public var oldestQueuedSeconds: Double
    /// `wa_outbox.runnable_demand()`: only for an operator of every organization (it is global).
    public var runnableDemand: Int?
    /// Per minute of the last hour: successful dispatches and failures.
    public var minutes: [(start: Date, dispatches: Int, failures: Int)]

    /// Above this, finished jobs are not counted on a refresh: for every organization (index-only
    /// scans), and for one (the finished jobs are read newest first and checked for the
    /// organization in the table: the bound keeps that cheap).
    public static let exactLimit = 50_000
    public static let exactLimitOneOrg = 10_000

    public static func limit(org: String?) -> Int { org == nil ? exactLimit : exactLimitOneOrg }

    public static func read(org: String?, in database: PostgresDatabase) async throws -> ConsoleOverview {
        let exactLimit = limit(org: org)
        let limit = exactLimit + 1
        let row = try await database.query("""
            SELECT (SELECT coalesce(sum(l.pending), 0) - coalesce(sum(l.run_left), 0) FROM wa_outbox.lanes l
                    WHERE \(org)::text IS NULL OR l.org = \(org))::int8,
                   (SELECT coalesce(sum(l.run_left), 0) FROM wa_outbox.lanes l WHERE l.busy AND (\(org)::text IS NULL OR l.org = \(org)))::int8,
                   (SELECT count(*) FROM (SELECT 1 FROM wa_outbox.jobs j
                        WHERE j.finished_at IS NOT NULL AND j.error_code IS NOT NULL AND j.error_code <> 'canceled'
                          AND (\(org)::text IS NULL OR j.org = \(org)) LIMIT \(limit)) f)::int8,
                   (SELECT count(*) FROM (SELECT 1 FROM wa_outbox.jobs j
                        WHERE j.finished_at IS NOT NULL AND j.error_code IS NOT NULL AND j.error_code = 'canceled'
                          AND (\(org)::text IS NULL OR j.org = \(org)) LIMIT \(limit)) c)::int8,
                   (SELECT count(*) FROM (SELECT 1 FROM wa_outbox.jobs j
                        WHERE j.finished_at IS NOT NULL AND (\(org)::text IS NULL OR j.org = \(org))
                        ORDER BY j.finished_at DESC LIMIT \(limit)) d)::int8,
                   (SELECT coalesce(extract(epoch FROM now() - min(h.created_at)), 0)::float8
                    FROM wa_outbox.lanes l
                    CROSS JOIN LATERAL (
                        SELECT j.created_at FROM wa_outbox.jobs j
                        WHERE j.session_id = l.session_id AND j.chat = l.chat AND j.finished_at IS NULL AND j.state = 'queued'
                        ORDER BY j.run_at, j.id LIMIT 1) h
                    WHERE l.pending > 0 AND (\(org)::text IS NULL OR l.org = \(org))),
                   CASE WHEN \(org)::text IS NULL THEN wa_outbox.runnable_demand() END
            """)[0]
        let failed: Int = try row.decode(at: 2), canceled: Int = try row.decode(at: 3), finished: Int = try row.decode(at: 4)
        var estimates: [String: Int] = [:]
        if org == nil, max(failed, canceled, finished) > exactLimit { estimates = try await stateEstimates(in: database) }
        func bounded(_ state: String, _ value: Int) -> BoundedCount {
            value > exactLimit ? BoundedCount(value: exactLimit, exact: false, estimate: estimates[state]) : BoundedCount(value: value, exact: true)
        }
        let succeeded = finished > exactLimit || failed > exactLimit || canceled > exactLimit
            ? BoundedCount(value: max(0, min(finished, exactLimit) - min(failed, exactLimit) - min(canceled, exactLimit)), exact: false,
                           estimate: estimates["succeeded"])
            : BoundedCount(value: finished - failed - canceled, exact: true)
        let minutes = try await database.query("""
            SELECT date_trunc('minute', e.created_at),
                   count(*) FILTER (WHERE e.status IN ('sent', 'edited', 'revoked'))::int8,
                   count(*) FILTER (WHERE e.status = 'failed')::int8
            FROM wa_outbox.events e
            WHERE e.created_at > now() - interval '1 hour' AND (\(org)::text IS NULL OR e.org = \(org))
            GROUP BY 1 ORDER BY 1
            """).map { (start: try $0.decode(Date.self, at: 0), dispatches: try $0.decode(Int.self, at: 1), failures: try $0.decode(Int.self, at: 2)) }
        return ConsoleOverview(
            byState: [("queued", BoundedCount(value: try row.decode(at: 0), exact: true)),
                      ("running", BoundedCount(value: try row.decode(at: 1), exact: true)),
                      ("succeeded", succeeded), ("failed", bounded("failed", failed)), ("canceled", bounded("canceled", canceled))],
            oldestQueuedSeconds: try row.decode(at: 5), runnableDemand: try row.decode(Int?.self, at: 6), minutes: minutes)
    }

    /// Jobs per state as the planner estimates them (most common values × live rows).
    static func stateEstimates(in database: PostgresDatabase) async throws -> [String: Int] {
        let rows = try await database.query("""
            SELECT v.state, (v.freq * greatest(c.reltuples, 0))::int8
            FROM pg_stats s, pg_class c,
                 unnest(s.most_common_vals::text::text[], s.most_common_freqs) AS v(state, freq)
            WHERE s.schemaname = 'wa_outbox' AND s.tablename = 'jobs' AND s.attname = 'state' AND c.oid = 'wa_outbox.jobs'::regclass
            """)
        return Dictionary(try rows.map { (try $0.decode(String.self, at: 0), try $0.decode(Int.self, at: 1)) }, uniquingKeysWith: { a, _ in a })
    }
}

/// The console's other reads: failure groups, sessions' queues, a cancel's dry run; and its audit.
public enum ConsoleQueries {
    public struct FailureGroup: Sendable, Equatable {
        public var org: String
        public var errorCode: String
        public var session: String
        public var count: Int
        /// The newest failed job of the group.
        public var latestJob: Int64
    }

    /// Failed jobs by organization, error code and session, largest groups first: an index-only
    /// scan of `jobs_failures` (migrations/0015).
    public static func failureGroups(org: String?, limit: Int = 200, in database: PostgresDatabase) async throws -> [FailureGroup] {
        try await database.query("""
            SELECT j.org, j.error_code, j.session_id, count(*)::int8, max(j.id)
            FROM wa_outbox.jobs j
            WHERE j.finished_at IS NOT NULL AND j.error_code IS NOT NULL AND j.error_code <> 'canceled'
              AND (\(org)::text IS NULL OR j.org = \(org))
            GROUP BY 1, 2, 3 ORDER BY 4 DESC, 1, 2, 3 LIMIT \(limit)
            """).map { FailureGroup(org: try $0.decode(at: 0), errorCode: try $0.decode(at: 1), session: try $0.decode(at: 2),
                                    count: try $0.decode(at: 3), latestJob: try $0.decode(at: 4)) }
    }

    public struct SessionQueue: Sendable, Equatable {
        public var queued: Int
        public var statusCheckedAt: Date?
    }

    /// Each session's queued jobs (from its lanes) and when its engine was last asked.
    public static func sessionQueues(org: String?, in database: PostgresDatabase) async throws -> [String: SessionQueue] {
        let rows = try await database.query("""
            SELECT s.id, coalesce(q.queued, 0)::int8, CASE WHEN s.status_checked_at = '-infinity' THEN NULL ELSE s.status_checked_at END
            FROM wa_outbox.sessions s
            LEFT JOIN (SELECT l.session_id, sum(l.pending) - sum(l.run_left) AS queued
                       FROM wa_outbox.lanes l WHERE \(org)::text IS NULL OR l.org = \(org) GROUP BY 1) q ON q.session_id = s.id
            WHERE \(org)::text IS NULL OR s.org = \(org)
            """)
        var result: [String: SessionQueue] = [:]
        for row in rows { result[try row.decode(at: 0)] = SessionQueue(queued: try row.decode(at: 1), statusCheckedAt: try row.decode(at: 2)) }
        return result
    }

    /// What a cancel of `filter` would do: the queued jobs it would cancel, and how many it would leave.
    public static func planCancel(_ filter: JobFilter, in database: PostgresDatabase) async throws -> (queued: Int, others: Int) {
        var query = PostgresQuery("SELECT count(*) FILTER (WHERE j.state = 'queued')::int8, count(*) FILTER (WHERE j.state <> 'queued')::int8 FROM wa_outbox.jobs j WHERE true")
        filter.apply(to: &query)
        let row = try await database.query(query)[0]
        return (try row.decode(at: 0), try row.decode(at: 1))
    }

    /// An audit entry for an action that is not a replay or cancel (those write their own):
    /// `view_body` of a job, `pause` or `resume` of a session.
    public static func audit(actor: String, action: String, jobID: Int64? = nil, session: String? = nil, org: String, reason: String,
                             in database: PostgresDatabase) async throws {
        try await database.query("""
            INSERT INTO wa_outbox.audit (actor, action, job_id, session_id, org, reason)
            VALUES (\(actor), \(action), \(jobID), \(session), \(org), \(reason))
            """)
    }
}
