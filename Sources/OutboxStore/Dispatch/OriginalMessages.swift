import Foundation
import OutboxCore
import PostgresClient

/// The sends that edits and revokes act on, for the checks before their dispatch.
public enum OriginalMessages {
    public struct Original: Sendable {
        public var state: String
        public var sentAt: Date?
        public var type: String?
        public var engineMessageID: String?
    }

    /// The send job of each (session, message id) of `targets` that has one, keyed by `key(_:_:)`.
    public static func find(_ targets: [(session: String, messageID: String)], on connection: PostgresConnection) async throws -> [String: Original] {
        guard !targets.isEmpty else { return [:] }
        let rows = try await connection.query("""
            SELECT j.session_id, j.wa_message_id, j.state, j.sent_at, j.payload->>'type', j.engine_message_id
            FROM wa_outbox.jobs j
            JOIN unnest(\(targets.map(\.session))::text[], \(targets.map(\.messageID))::text[]) AS t(session_id, mid)
              ON j.session_id = t.session_id AND j.wa_message_id = t.mid
            WHERE j.kind = 'send'
            """)
        var originals: [String: Original] = [:]
        for row in rows {
            originals[key(try row.decode(at: 0), try row.decode(at: 1))] =
                Original(state: try row.decode(at: 2), sentAt: try row.decode(at: 3), type: try row.decode(at: 4), engineMessageID: try row.decode(at: 5))
        }
        return originals
    }

    public static func key(_ session: String, _ messageID: String) -> String { "\(session)\u{0}\(messageID)" }

    /// Of `keyIDs` (engine message ids as `MessageKey.keyID` forms them), those some job of the
    /// session already owns: a reconciliation must not adopt another job's message.
    public static func owned(keyIDs: [String], session: String, in database: PostgresDatabase) async throws -> Set<String> {
        guard !keyIDs.isEmpty else { return [] }
        return Set(try await database.query("""
            SELECT engine_key_id FROM wa_outbox.jobs
            WHERE session_id = \(session) AND engine_key_id = ANY(\(keyIDs)::text[])
            """).map { try $0.decode(String.self, at: 0) })
    }
}
