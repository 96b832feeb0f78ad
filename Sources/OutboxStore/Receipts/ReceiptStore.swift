import Foundation
import OutboxCore
import PostgresClient

/// A receipt for one sent message, found by its session and the message's key id.
public struct ReceiptUpdate: Sendable, Equatable {
    public enum Level: Int16, Sendable, Comparable {
        case delivered = 1, read = 2
        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
    }

    public var session: String
    public var keyID: String
    public var level: Level

    public init(session: String, keyID: String, level: Level) {
        self.session = session
        self.keyID = keyID
        self.level = level
    }
}

/// Turns receipts into `message.status` events `delivered` and `read`.
///
/// A job's `receipt` column only moves forward, under a row lock: a repeated webhook, or a
/// `delivered` that arrives after `read`, writes nothing. A `read` for a message with no
/// `delivered` yet writes both, in order (read implies delivered). Receipts for messages this
/// outbox did not send are ignored.
public enum ReceiptStore {
    /// Records the receipts; returns the number of events written.
    @discardableResult
    public static func record(_ receipts: [ReceiptUpdate], in database: PostgresDatabase) async throws -> Int {
        guard !receipts.isEmpty else { return 0 }
        let rows = try await database.query("""
            WITH input AS (
                SELECT session_id, key_id, max(level) AS level
                FROM unnest(\(receipts.map(\.session))::text[], \(receipts.map(\.keyID))::text[], \(receipts.map { Int64($0.level.rawValue) })::int8[])
                    AS i(session_id, key_id, level)
                GROUP BY session_id, key_id
            ),
            locked AS (
                SELECT j.id, j.receipt AS old, i.level
                FROM wa_outbox.jobs j JOIN input i ON j.session_id = i.session_id AND j.engine_key_id = i.key_id
                WHERE j.kind = 'send' AND j.state = 'succeeded' AND j.receipt < i.level
                FOR UPDATE OF j
            ),
            updated AS (
                UPDATE wa_outbox.jobs j SET receipt = l.level
                FROM locked l WHERE j.id = l.id AND j.receipt < l.level
                RETURNING j.id, j.org, j.session_id, j.wa_message_id, j.attempts, l.old, l.level
            ),
            events AS (
                INSERT INTO wa_outbox.events (org, session_id, job_id, wa_message_id, kind, status, attempt)
                SELECT u.org, u.session_id, u.id, u.wa_message_id, 'send', CASE step WHEN 1 THEN 'delivered' ELSE 'read' END, u.attempts
                FROM updated u, generate_series(u.old + 1, u.level) step
                ORDER BY u.id, step
                RETURNING 1
            )
            SELECT count(*)::int8 FROM events
            """)
        return try rows[0].decode(Int.self, at: 0)
    }
}
