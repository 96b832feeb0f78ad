import Foundation
import OutboxCore
import PostgresClient

/// A registered WhatsApp session.
public struct SessionRecord: Sendable, Equatable, Codable {
    public var id: String
    public var org: String
    /// `sim`, `wuzapi` or `waha`.
    public var engine: String
    public var engineURL: String?
    /// Where the engine credential lives: `env:VAR` or `file:/path`; never the secret itself.
    public var credentialRef: String?
    public var state: String
    public var maxInFlight: Int
    /// Limits; nil takes the worker's configured default.
    public var ratePerSecond: Double?
    public var burst: Int?
    public var pacing: Bool?
    public var minGapMilliseconds: Int?
    public var maxGapMilliseconds: Int?
    public var hourlyBudget: Int?
    public var dailyBudget: Int?
    /// Read only: what the engine last said (unknown, connected, connecting, disconnected), why
    /// the session is paused or restricted, and its jobs in flight.
    public var engineStatus: String?
    public var stateReason: String?
    public var inFlight: Int?

    public init(id: String, org: String, engine: String, engineURL: String? = nil, credentialRef: String? = nil,
                state: String = "active", maxInFlight: Int = 1) {
        self.id = id
        self.org = org
        self.engine = engine
        self.engineURL = engineURL
        self.credentialRef = credentialRef
        self.state = state
        self.maxInFlight = maxInFlight
    }

    /// The settings a worker dispatches with, as a column list of the table named `table`, in the
    /// order `init(id:org:settingsFrom:at:)` reads them: 12 columns.
    public static func settingsColumns(of table: String) -> String {
        ["engine", "engine_url", "credential_ref", "state", "max_in_flight", "rate_per_second", "burst", "pacing",
         "min_gap_ms", "max_gap_ms", "hourly_budget", "daily_budget"].map { "\(table).\($0)" }.joined(separator: ", ")
    }

    /// Reads the 12 columns of `settingsColumns` from `row`, starting at column `start`.
    public init(id: String, org: String, settingsFrom row: PostgresRow, at start: Int) throws {
        self.init(id: id, org: org, engine: try row.decode(at: start), engineURL: try row.decode(at: start + 1),
                  credentialRef: try row.decode(at: start + 2), state: try row.decode(at: start + 3), maxInFlight: try row.decode(at: start + 4))
        ratePerSecond = try row.decode(at: start + 5)
        burst = try row.decode(at: start + 6)
        pacing = try row.decode(at: start + 7)
        minGapMilliseconds = try row.decode(at: start + 8)
        maxGapMilliseconds = try row.decode(at: start + 9)
        hourlyBudget = try row.decode(at: start + 10)
        dailyBudget = try row.decode(at: start + 11)
    }
}

public enum SessionRegistry {
    /// Adds a session, or updates its settings if it exists in the same organization.
    public static func upsert(_ session: SessionRecord, in database: PostgresDatabase) async throws(OutboxError) {
        guard ["sim", "wuzapi", "waha"].contains(session.engine) else {
            throw OutboxError(.validationError, "engine must be sim, wuzapi or waha")
        }
        if let ref = session.credentialRef, !(ref.hasPrefix("env:") || ref.hasPrefix("file:")) {
            throw OutboxError(.validationError, "a credential is referenced as env:VAR or file:/path, never stored in clear")
        }
        do {
            let rows = try await database.query("""
                INSERT INTO wa_outbox.sessions (id, org, engine, engine_url, credential_ref, state, max_in_flight,
                                                rate_per_second, burst, pacing, min_gap_ms, max_gap_ms, hourly_budget, daily_budget)
                VALUES (\(session.id), \(session.org), \(session.engine), \(session.engineURL), \(session.credentialRef),
                        \(session.state), \(session.maxInFlight), \(session.ratePerSecond), \(session.burst), \(session.pacing),
                        \(session.minGapMilliseconds), \(session.maxGapMilliseconds), \(session.hourlyBudget), \(session.dailyBudget))
                ON CONFLICT (id) DO UPDATE SET engine = EXCLUDED.engine, engine_url = EXCLUDED.engine_url,
                    credential_ref = EXCLUDED.credential_ref, state = EXCLUDED.state,
                    max_in_flight = EXCLUDED.max_in_flight, rate_per_second = EXCLUDED.rate_per_second,
                    burst = EXCLUDED.burst, pacing = EXCLUDED.pacing, min_gap_ms = EXCLUDED.min_gap_ms,
                    max_gap_ms = EXCLUDED.max_gap_ms, hourly_budget = EXCLUDED.hourly_budget,
                    daily_budget = EXCLUDED.daily_budget, updated_at = now()
                WHERE wa_outbox.sessions.org = EXCLUDED.org
                RETURNING id
                """)
            if rows.isEmpty { throw OutboxError(.validationError, "session \(session.id) belongs to another organization") }
        } catch let error as OutboxError {
            throw error
        } catch {
            throw OutboxError(.validationError, "cannot save session \(session.id): \(error)")
        }
    }

    public static func all(in database: PostgresDatabase, org: String? = nil) async throws -> [SessionRecord] {
        try await select(where: "\(org) IS NULL OR org = \(org)", in: database)
    }

    public static func find(_ id: String, in database: PostgresDatabase) async throws -> SessionRecord? {
        try await select(where: "id = \(id)", in: database).first
    }

    private static func select(where condition: PostgresQuery, in database: PostgresDatabase) async throws -> [SessionRecord] {
        // `condition` carries its own $n parameters; the text before it has none.
        let query = PostgresQuery(
            "SELECT id, org, \(SessionRecord.settingsColumns(of: "sessions")), engine_status, state_reason, in_flight FROM wa_outbox.sessions WHERE "
                + condition.sql + " ORDER BY id",
            binds: condition.binds)
        return try await database.query(query).map { row in
            var record = try SessionRecord(id: row.decode(at: 0), org: row.decode(at: 1), settingsFrom: row, at: 2)
            record.engineStatus = try row.decode(at: 14)
            record.stateReason = try row.decode(at: 15)
            record.inFlight = try row.decode(at: 16)
            return record
        }
    }

    /// Changes some settings of an organization's session; nil leaves a setting as it is.
    public struct Changes: Sendable {
        public var state: String?
        public var reason: String?
        public var engineURL: String?
        public var credentialRef: String?
        public var maxInFlight: Int?
        public var ratePerSecond: Double?
        public var burst: Int?
        public var pacing: Bool?
        public var minGapMilliseconds: Int?
        public var maxGapMilliseconds: Int?
        public var hourlyBudget: Int?
        public var dailyBudget: Int?

        public init() {}
    }

    /// Applies `changes`. Setting a paused or restricted session `active` writes a session event
    /// `active`, and its queued jobs are claimed again.
    public static func update(_ id: String, org: String, _ changes: Changes, in database: PostgresDatabase) async throws(OutboxError) {
        if let state = changes.state, !["active", "paused"].contains(state) {
            throw OutboxError(.validationError, "state must be active or paused (restricted is set by WhatsApp's 463 answers)")
        }
        if let ref = changes.credentialRef, !(ref.hasPrefix("env:") || ref.hasPrefix("file:")) {
            throw OutboxError(.validationError, "a credential is referenced as env:VAR or file:/path, never stored in clear")
        }
        var query = PostgresQuery("WITH before AS (SELECT id, state FROM wa_outbox.sessions WHERE id = ")
        query.append("", id)
        query.append(" AND org = ", org)
        query.append(" FOR UPDATE), changed AS (UPDATE wa_outbox.sessions s SET updated_at = now()")
        if let value = changes.state {
            query.append(", state = ", value)
            query.append(", state_reason = ", changes.reason ?? "set by an operator")
            // A session that comes back is asked about its engine again at once.
            query.append(", status_checked_at = '-infinity', not_before = '-infinity'")
        }
        if let value = changes.engineURL { query.append(", engine_url = ", value) }
        if let value = changes.credentialRef { query.append(", credential_ref = ", value) }
        if let value = changes.maxInFlight { query.append(", max_in_flight = ", value) }
        if let value = changes.ratePerSecond { query.append(", rate_per_second = ", value) }
        if let value = changes.burst { query.append(", burst = ", value) }
        if let value = changes.pacing { query.append(", pacing = ", value) }
        if let value = changes.minGapMilliseconds { query.append(", min_gap_ms = ", value) }
        if let value = changes.maxGapMilliseconds { query.append(", max_gap_ms = ", value) }
        if let value = changes.hourlyBudget { query.append(", hourly_budget = ", value) }
        if let value = changes.dailyBudget { query.append(", daily_budget = ", value) }
        query.append("""
             FROM before b WHERE s.id = b.id RETURNING s.id, s.org, s.state, b.state AS state_before
            ),
            events AS (
                INSERT INTO wa_outbox.events (org, session_id, kind, status, error_message)
                SELECT c.org, c.id, 'session', 'active', 'set active by an operator' FROM changed c
                WHERE c.state = 'active' AND c.state_before <> 'active'
            ),
            woken AS (SELECT pg_notify('wa_outbox_jobs', '') FROM changed WHERE state = 'active')
            SELECT count(*)::int8 FROM changed
            """)
        do {
            let rows = try await database.query(query)
            if try rows[0].decode(Int.self, at: 0) == 0 { throw OutboxError(.notFound, "session \(id) does not exist in organization \(org)") }
        } catch let error as OutboxError {
            throw error
        } catch {
            throw OutboxError(.validationError, "cannot change session \(id): \(error)")
        }
    }

    /// Removes an organization's session. Refused while it has queued or running jobs: cancel
    /// them or let them finish first. Finished jobs and events stay until pruned.
    public static func remove(_ id: String, org: String, in database: PostgresDatabase) async throws(OutboxError) {
        let removed: Int
        let unfinished: Int
        do {
            let rows = try await database.query("""
                WITH unfinished AS (
                    SELECT count(*)::int8 AS n FROM wa_outbox.jobs WHERE session_id = \(id) AND org = \(org) AND finished_at IS NULL
                ),
                removed AS (
                    DELETE FROM wa_outbox.sessions s WHERE s.id = \(id) AND s.org = \(org) AND (SELECT n FROM unfinished) = 0
                    RETURNING s.id
                ),
                lanes AS (DELETE FROM wa_outbox.lanes l WHERE l.session_id IN (SELECT id FROM removed))
                SELECT (SELECT count(*)::int8 FROM removed), (SELECT n FROM unfinished)
                """)
            removed = try rows[0].decode(Int.self, at: 0)
            unfinished = try rows[0].decode(Int.self, at: 1)
        } catch {
            throw OutboxError(.validationError, "cannot remove session \(id): \(error)")
        }
        if unfinished > 0 {
            throw OutboxError(.validationError, "session \(id) still has \(unfinished) queued or running jobs; cancel them (wa-outbox jobs cancel --session \(id)) or let them finish")
        }
        if removed == 0 { throw OutboxError(.notFound, "session \(id) does not exist in organization \(org)") }
    }
}
