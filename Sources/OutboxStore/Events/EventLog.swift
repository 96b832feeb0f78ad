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
    /// The id of the transaction that wrote it: with `id`, its place in the stream (`cursor`).
    public var tx: Int64 = 0
    public var mode: String { "async" }
    /// Where a reader that has this event resumes.
    public var cursor: EventCursor { EventCursor(tx: tx, id: id) }

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
        extract(epoch FROM created_at)::float8, tx::text::int8
        """

    /// An event from a row of `columns`. Session events have no job and no message id.
    public init(row: PostgresRow) throws {
        self.init(
            id: try row.decode(at: 0), org: try row.decode(at: 1), session: try row.decode(at: 2),
            outboxId: try row.decode(Int64?.self, at: 3).map(String.init) ?? "", waMessageId: try row.decode(String?.self, at: 4) ?? "",
            kind: try row.decode(at: 5), status: try row.decode(at: 6), attempt: try row.decode(at: 7),
            errorCode: try row.decode(at: 8), errorMessage: try row.decode(at: 9), timestamp: try row.decode(at: 10),
            tx: try row.decode(at: 11)
        )
    }

    public init(id: Int64, org: String, session: String, outboxId: String, waMessageId: String, kind: String, status: String,
                attempt: Int, errorCode: String?, errorMessage: String?, timestamp: Double, tx: Int64 = 0) {
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
        self.tx = tx
    }
}

/// The `message.status` stream, read by cursor.
///
/// Events come in the order they became visible, (tx, id), and a reader that resumes after the
/// last cursor it saw misses nothing and repeats nothing: `events_after` returns only events whose
/// transaction is older than every transaction still running, and every later event sorts after
/// them (migrations/0011_event_cursor.sql says why id order alone skipped events).
public enum EventLog {
    public static func after(_ cursor: EventCursor, org: String?, limit: Int = 500, in database: PostgresDatabase) async throws -> [StatusEvent] {
        var query = PostgresQuery("SELECT " + StatusEvent.columns)
        query.append(" FROM wa_outbox.events_after(", org)
        query.append(", ", String(cursor.tx))
        query.append("::xid8, ", cursor.id)
        query.append(", ", Int32(limit))
        query.append(")")
        return try await database.query(query).map(StatusEvent.init(row:))
    }

    /// The cursor a new reader starts from to see only what comes next: the last event
    /// `events_after` would return now (`.start` for an empty log).
    public static func head(in database: PostgresDatabase) async throws -> EventCursor {
        try await cursor(database.query("SELECT tx::text::int8, id FROM wa_outbox.events_head()")[0])
    }

    /// The cursor of event `id` of `org` (a client's `Last-Event-ID`): 0 is the start of the log;
    /// an id the log no longer holds resumes with the events written after it.
    public static func cursor(afterID id: Int64, org: String?, in database: PostgresDatabase) async throws -> EventCursor {
        try await cursor(database.query("SELECT tx::text::int8, id FROM wa_outbox.event_cursor(\(org), \(id))")[0])
    }

    private static func cursor(_ row: PostgresRow) throws -> EventCursor {
        EventCursor(tx: try row.decode(at: 0), id: try row.decode(at: 1))
    }

    /// The first final event of each of these jobs that has one, each job with its organization.
    /// Read by job id, not by cursor: it does not wait for older transactions to end.
    public static func finals(of jobs: [(id: Int64, org: String)], in database: PostgresDatabase) async throws -> [StatusEvent] {
        guard !jobs.isEmpty else { return [] }
        var query = PostgresQuery("SELECT DISTINCT ON (job_id) " + StatusEvent.columns)
        query.append(" FROM wa_outbox.events WHERE (job_id, org) IN (SELECT * FROM unnest(", jobs.map(\.id))
        query.append("::int8[], ", jobs.map(\.org))
        query.append("::text[])) AND status = ANY(", StatusEvent.finalStatuses.sorted())
        query.append(") ORDER BY job_id, id")
        return try await database.query(query).map(StatusEvent.init(row:))
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
