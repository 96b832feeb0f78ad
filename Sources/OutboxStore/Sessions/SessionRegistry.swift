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
            "SELECT id, org, engine, engine_url, credential_ref, state, max_in_flight, rate_per_second, burst, pacing, "
                + "min_gap_ms, max_gap_ms, hourly_budget, daily_budget FROM wa_outbox.sessions WHERE "
                + condition.sql + " ORDER BY id",
            binds: condition.binds)
        return try await database.query(query).map { row in
            var record = SessionRecord(id: try row.decode(at: 0), org: try row.decode(at: 1), engine: try row.decode(at: 2),
                                       engineURL: try row.decode(at: 3), credentialRef: try row.decode(at: 4),
                                       state: try row.decode(at: 5), maxInFlight: try row.decode(at: 6))
            record.ratePerSecond = try row.decode(at: 7)
            record.burst = try row.decode(at: 8)
            record.pacing = try row.decode(at: 9)
            record.minGapMilliseconds = try row.decode(at: 10)
            record.maxGapMilliseconds = try row.decode(at: 11)
            record.hourlyBudget = try row.decode(at: 12)
            record.dailyBudget = try row.decode(at: 13)
            return record
        }
    }
}
