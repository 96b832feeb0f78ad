import Foundation
import OutboxCore
import PostgresClient

/// One `message.status` event.
public struct StatusEvent: Sendable, Equatable, Codable {
    public var id: Int64
    public var org: String
    public var session: String
    /// The job's id; empty for a session event (kind `session`), which belongs to no job.
    public var outboxId: String
    /// Empty for a session event.
    public var waMessageId: String
    public var kind: String
    public var status: String
    public var attempt: Int
    public var errorCode: String?
    public var errorMessage: String?
    /// Unix seconds, with fractions.
    public var timestamp: Double
    public var mode: String { "async" }

    /// The statuses after which a job writes no other (but receipts: delivered, read, undelivered).
    public static let finalStatuses: Set<String> = ["sent", "edited", "revoked", "failed", "canceled"]

    /// True for a job's event; false for a session event (restricted, active again).
    public var isMessageStatus: Bool { kind != "session" }

    enum CodingKeys: String, CodingKey {
        case id, org, session, outboxId, waMessageId, kind, status, attempt, errorCode, errorMessage, timestamp
    }

    /// The columns `init(row:)` reads, from `wa_outbox.events` or a function returning its rows.
    public static let columns = """
        id, org, session_id, job_id, wa_message_id, kind, status, attempt, error_code, error_message,
        extract(epoch FROM created_at)::float8
        """

    /// An event from a row of `columns`. Session events have no job and no message id.
    public init(row: PostgresRow) throws {
        self.init(
            id: try row.decode(at: 0), org: try row.decode(at: 1), session: try row.decode(at: 2),
            outboxId: try row.decode(Int64?.self, at: 3).map(String.init) ?? "", waMessageId: try row.decode(String?.self, at: 4) ?? "",
            kind: try row.decode(at: 5), status: try row.decode(at: 6), attempt: try row.decode(at: 7),
            errorCode: try row.decode(at: 8), errorMessage: try row.decode(at: 9), timestamp: try row.decode(at: 10)
        )
    }

    public init(id: Int64, org: String, session: String, outboxId: String, waMessageId: String, kind: String, status: String,
                attempt: Int, errorCode: String?, errorMessage: String?, timestamp: Double) {
        self.id = id
        self.org = org
        self.session = session
        self.outboxId = outboxId
        self.waMessageId = waMessageId
        self.kind = kind
        self.status = status
        self.attempt = attempt
        self.errorCode = errorCode
        self.errorMessage = errorMessage
        self.timestamp = timestamp
    }
}

/// The `message.status` stream, read by cursor.
///
/// A reader that resumes after the last id it saw never misses an event: `events_after` only
/// returns events whose transaction is older than every transaction still in progress, so an event
/// that commits late with a lower id is not skipped.
public enum EventLog {
    public static func after(_ cursor: Int64, org: String?, limit: Int = 500, in database: PostgresDatabase) async throws -> [StatusEvent] {
        var query = PostgresQuery("SELECT " + StatusEvent.columns)
        query.append(" FROM wa_outbox.events_after(", org)
        query.append(", ", cursor)
        query.append(", ", Int32(limit))
        query.append(")")
        return try await database.query(query).map(StatusEvent.init(row:))
    }

    /// The cursor a new reader starts from to see only what comes next: the last event
    /// `events_after` would return now (0 for an empty log).
    public static func head(in database: PostgresDatabase) async throws -> Int64 {
        try await database.query("""
            SELECT coalesce(max(id), 0)::int8 FROM wa_outbox.events
            WHERE tx < pg_snapshot_xmin(pg_current_snapshot())
            """)[0].decode(at: 0)
    }

    /// The first final event (`StatusEvent.finalStatuses`) of one job of `org`, if it has one.
    public static func final(jobID: Int64, org: String, in database: PostgresDatabase) async throws -> StatusEvent? {
        var query = PostgresQuery("SELECT " + StatusEvent.columns)
        query.append(" FROM wa_outbox.events WHERE job_id = ", jobID)
        query.append(" AND org = ", org)
        query.append(" AND status = ANY(", StatusEvent.finalStatuses.sorted())
        query.append(") ORDER BY id LIMIT 1")
        return try await database.query(query).first.map(StatusEvent.init(row:))
    }
}
