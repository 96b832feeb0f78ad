import Foundation
import OutboxCore
import PostgresClient

/// One `message.status` event.
public struct StatusEvent: Sendable, Equatable, Codable {
    public var id: Int64
    public var org: String
    public var session: String
    public var outboxId: String
    public var waMessageId: String
    public var kind: String
    public var status: String
    public var attempt: Int
    public var errorCode: String?
    public var errorMessage: String?
    /// Unix seconds, with fractions.
    public var timestamp: Double
    public var mode: String { "async" }

    enum CodingKeys: String, CodingKey {
        case id, org, session, outboxId, waMessageId, kind, status, attempt, errorCode, errorMessage, timestamp
    }
}

/// The `message.status` stream, read by cursor.
///
/// A reader that resumes after the last id it saw never misses an event: `events_after` only
/// returns events whose transaction is older than every transaction still in progress, so an event
/// that commits late with a lower id is not skipped.
public enum EventLog {
    public static func after(_ cursor: Int64, org: String?, limit: Int = 500, in database: PostgresDatabase) async throws -> [StatusEvent] {
        let rows = try await database.query("""
            SELECT id, org, session_id, job_id, wa_message_id, kind, status, attempt, error_code, error_message,
                   extract(epoch FROM created_at)::float8
            FROM wa_outbox.events_after(\(org), \(cursor), \(Int32(limit)))
            """)
        return try rows.map { row in
            StatusEvent(
                id: try row.decode(at: 0), org: try row.decode(at: 1), session: try row.decode(at: 2),
                outboxId: String(try row.decode(Int64.self, at: 3)), waMessageId: try row.decode(at: 4),
                kind: try row.decode(at: 5), status: try row.decode(at: 6), attempt: try row.decode(at: 7),
                errorCode: try row.decode(at: 8), errorMessage: try row.decode(at: 9), timestamp: try row.decode(at: 10)
            )
        }
    }
}
