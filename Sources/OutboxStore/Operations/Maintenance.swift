import Foundation
import OutboxCore
import PostgresClient

/// How long finished work is kept.
public struct Retention: Sendable {
    /// Succeeded, failed and canceled jobs, counted from when they finished. Longer than the
    /// 48-hour revoke window, so a revoke still finds the send it acts on.
    public var jobs: Duration = .seconds(7 * 86_400)
    public var events: Duration = .seconds(7 * 86_400)
    public var audit: Duration = .seconds(90 * 86_400)
    /// Rows per DELETE: small, so no statement holds its locks for long.
    public var batchSize = 250

    public init() {}
}

public struct PruneReport: Sendable, Codable, Equatable {
    public var jobs = 0
    public var events = 0
    public var lanes = 0
    public var audit = 0
    /// The longest single DELETE, which is also the longest any prune statement held its locks.
    public var longestStatementMilliseconds = 0.0
    /// False if another process was pruning; it was left to finish alone.
    public var ran = true
}

/// Deletes finished work past its retention, in small batches, one process at a time.
public enum Maintenance {
    /// `pg_try_advisory_lock` key: "waprune!".
    static let pruneLockKey: Int64 = 0x7761_7072_756e_6521

    public static func prune(_ retention: Retention, in database: PostgresDatabase) async throws -> PruneReport {
        try await database.withConnection { connection in
            try await ifUnlocked(pruneLockKey, on: connection) {
                var report = PruneReport()
                report.jobs = try await deleteInBatches(on: connection, &report) { """
                    DELETE FROM wa_outbox.jobs WHERE id IN (
                        SELECT id FROM wa_outbox.jobs
                        WHERE finished_at < now() - \(retention.jobs.seconds) * interval '1 second'
                        ORDER BY finished_at LIMIT \(retention.batchSize))
                    """ }
                report.events = try await deleteInBatches(on: connection, &report) { """
                    DELETE FROM wa_outbox.events WHERE id IN (
                        SELECT id FROM wa_outbox.events
                        WHERE created_at < now() - \(retention.events.seconds) * interval '1 second'
                        ORDER BY id LIMIT \(retention.batchSize))
                    """ }
                report.audit = try await deleteInBatches(on: connection, &report) { """
                    DELETE FROM wa_outbox.audit WHERE id IN (
                        SELECT id FROM wa_outbox.audit
                        WHERE at < now() - \(retention.audit.seconds) * interval '1 second'
                        ORDER BY id LIMIT \(retention.batchSize))
                    """ }
                // Idle lanes; an enqueue racing with this re-creates its lane (ON CONFLICT waits
                // for the row lock, then finds the row gone and inserts).
                report.lanes = try await deleteInBatches(on: connection, &report) { """
                    DELETE FROM wa_outbox.lanes WHERE ctid IN (
                        SELECT ctid FROM wa_outbox.lanes WHERE pending = 0 AND NOT busy LIMIT \(retention.batchSize)
                        FOR UPDATE SKIP LOCKED)
                    """ }
                return report
            } ?? PruneReport(ran: false)
        }
    }

    /// `pg_try_advisory_lock` key: "wavacuum".
    static let vacuumLockKey: Int64 = 0x7761_7661_6375_756d

    /// Vacuums each of the queue's churning tables (`jobs`, `events`, `lanes`) whose dead rows
    /// passed 10,000 + 2% of its live rows, one process at a time, throttled like autovacuum
    /// (`vacuum_cost_delay` 2 ms, cost limit 2000), skipping a table autovacuum is already on.
    /// Only tables the worker's role owns (PostgreSQL lets no one else vacuum them; a worker
    /// running as another role leaves them to autovacuum). Returns the tables vacuumed.
    ///
    /// Why not leave it to autovacuum: it looks at a database once per `autovacuum_naptime`, a
    /// minute by default. A worker writes two dead job versions per message (the claim's in place,
    /// the completion's not), so at thousands of messages a second the dead rows of a minute fill
    /// pages that only a vacuum makes reusable
    /// (inserts find free space through the free-space map, which only vacuum updates), and the
    /// table grows by its whole throughput of a minute, again and again: 52 → 106 → 160 → 216 MB over
    /// four cycles of 100,000 messages. Checked every 10 s it stayed at 41–53 MB (the same as
    /// `autovacuum_naptime = 10s`, which needs a server setting many managed databases lock).
    public static func vacuumIfNeeded(in database: PostgresDatabase) async throws -> [String] {
        try await database.withConnection { connection in
            try await ifUnlocked(vacuumLockKey, on: connection) {
                let due = try await connection.query("""
                    SELECT t.relname::text FROM pg_stat_user_tables t JOIN pg_class c ON c.oid = t.relid
                    WHERE t.schemaname = 'wa_outbox' AND t.relname IN ('jobs', 'events', 'lanes')
                      AND t.n_dead_tup > 10000 + 0.02 * t.n_live_tup
                      AND pg_has_role(current_user, c.relowner, 'USAGE')
                    ORDER BY t.n_dead_tup DESC
                    """).map { try $0.decode(String.self, at: 0) }
                guard !due.isEmpty else { return [] }
                func throttle(_ on: Bool) async throws {
                    try await connection.query(on ? "SET vacuum_cost_delay = '2ms'" : "RESET vacuum_cost_delay")
                    try await connection.query(on ? "SET vacuum_cost_limit = 2000" : "RESET vacuum_cost_limit")
                }
                try await throttle(true)
                var vacuumed: [String] = []
                do {
                    for table in due {
                        // VACUUM takes no parameters; the statements are fixed, never built from input.
                        switch table {
                        case "jobs": try await connection.query("VACUUM (SKIP_LOCKED) wa_outbox.jobs")
                        case "events": try await connection.query("VACUUM (SKIP_LOCKED) wa_outbox.events")
                        case "lanes": try await connection.query("VACUUM (SKIP_LOCKED) wa_outbox.lanes")
                        default: continue
                        }
                        vacuumed.append(table)
                    }
                } catch {
                    if !connection.isBroken { try? await throttle(false) }
                    throw error
                }
                try await throttle(false)
                return vacuumed
            } ?? []
        }
    }

    /// Runs `body` holding the session-level advisory lock `key`, or returns nil at once when
    /// another process holds it. The lock is released however `body` ends (unless the connection
    /// broke, which releases it too).
    private static func ifUnlocked<T>(_ key: Int64, on connection: PostgresConnection,
                                      _ body: () async throws -> T) async throws -> T? {
        guard try await connection.query("SELECT pg_try_advisory_lock(\(key))")[0].decode(Bool.self, at: 0) else { return nil }
        do {
            let result = try await body()
            try await connection.query("SELECT pg_advisory_unlock(\(key))")
            return result
        } catch {
            if !connection.isBroken { _ = try? await connection.query("SELECT pg_advisory_unlock(\(key))") }
            throw error
        }
    }

    private static func deleteInBatches(on connection: PostgresConnection, _ report: inout PruneReport,
                                        _ statement: () -> PostgresQuery) async throws -> Int {
        var total = 0
        while true {
            let started = ContinuousClock.now
            let deleted = try await connection.query(statement()).affectedRows ?? 0
            let took = ContinuousClock.now - started
            report.longestStatementMilliseconds = max(report.longestStatementMilliseconds,
                                                      Double(took.components.seconds) * 1_000 + Double(took.components.attoseconds) / 1e15)
            total += deleted
            if deleted == 0 { return total }
        }
    }
}

/// A snapshot for `wa-outbox stats`.
public struct QueueStats: Sendable, Codable, Equatable {
    public var byState: [String: Int]
    public var oldestQueuedSeconds: Double?
    /// Final events in the last minute.
    public var finishedLastMinute: Int
    public var busiestSessions: [SessionLoad]
    public var liveWorkers: Int

    public struct SessionLoad: Sendable, Codable, Equatable {
        public var session: String
        public var queued: Int
        public var inFlight: Int
    }

    public static func read(from database: PostgresDatabase, org: String? = nil) async throws -> QueueStats {
        var byState: [String: Int] = [:]
        for row in try await database.query("""
            SELECT state, count(*) FROM wa_outbox.jobs WHERE \(org) IS NULL OR org = \(org) GROUP BY state
            """) {
            byState[try row.decode(at: 0)] = try row.decode(at: 1)
        }
        let oldest = try await database.query("""
            SELECT extract(epoch FROM now() - min(created_at))::float8 FROM wa_outbox.jobs
            WHERE finished_at IS NULL AND state = 'queued' AND (\(org) IS NULL OR org = \(org))
            """)[0].decode(Double?.self, at: 0)
        let finished = try await database.query("""
            SELECT count(*) FROM wa_outbox.events
            WHERE id > (SELECT coalesce(max(id), 0) - 1000000 FROM wa_outbox.events)
              AND created_at > now() - interval '1 minute'
              AND status IN ('sent', 'edited', 'revoked', 'failed', 'canceled')
              AND (\(org) IS NULL OR org = \(org))
            """)[0].decode(Int.self, at: 0)
        let busiest = try await database.query("""
            SELECT s.id, (coalesce(sum(l.pending), 0) - coalesce(sum(l.run_left), 0))::int8, s.in_flight
            FROM wa_outbox.sessions s LEFT JOIN wa_outbox.lanes l ON l.session_id = s.id
            WHERE \(org) IS NULL OR s.org = \(org)
            GROUP BY s.id ORDER BY 2 DESC LIMIT 5
            """).map { QueueStats.SessionLoad(session: try $0.decode(at: 0), queued: try $0.decode(at: 1), inFlight: try $0.decode(at: 2)) }
        let workers = try await database.query("SELECT count(*) FROM wa_outbox.workers WHERE lease_expires_at > now()")[0].decode(Int.self, at: 0)
        return QueueStats(byState: byState, oldestQueuedSeconds: oldest, finishedLastMinute: finished, busiestSessions: busiest, liveWorkers: workers)
    }
}

/// A row of `wa_outbox.workers`, for `wa-outbox workers`.
public struct WorkerRecord: Sendable, Codable, Equatable {
    public var id: String
    public var name: String
    public var host: String
    public var pid: Int
    public var startedAt: Date
    public var heartbeatAt: Date
    public var leaseExpiresAt: Date
    public var inFlight: Int

    public static func all(in database: PostgresDatabase) async throws -> [WorkerRecord] {
        try await database.query("""
            SELECT id::text, name, host, pid, started_at, heartbeat_at, lease_expires_at, in_flight FROM wa_outbox.workers ORDER BY started_at
            """).map { row in
            WorkerRecord(id: try row.decode(at: 0), name: try row.decode(at: 1), host: try row.decode(at: 2), pid: try row.decode(at: 3),
                         startedAt: try row.decode(at: 4), heartbeatAt: try row.decode(at: 5), leaseExpiresAt: try row.decode(at: 6),
                         inFlight: try row.decode(at: 7))
        }
    }
}
