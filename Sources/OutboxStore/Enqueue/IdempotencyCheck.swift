import OutboxCore
import PostgresClient

/// Whether a request that reused an idempotency key is the request that first used it.
///
/// The same key with the same request returns the original result; with a different request it
/// is refused (422), as the IETF idempotency-key draft and Stripe do. Requests compare by session,
/// kind and payload as `wa_outbox.enqueue` stores it (`validate_payload` normalizes JIDs and
/// defaults), so `…@c.us` and `…@s.whatsapp.net` are the same request.
public enum IdempotencyCheck {
    public static func isSameRequest(outboxID: Int64, as request: EnqueueRequest, in database: PostgresDatabase) async throws -> Bool {
        do {
            let rows = try await database.query("""
                SELECT j.session_id = \(request.session) AND j.kind = \(request.kind.rawValue)
                       AND j.payload = wa_outbox.validate_payload(\(request.kind.rawValue), \(PostgresJSONB(request.payload)))
                FROM wa_outbox.jobs j WHERE j.id = \(outboxID) AND j.org = \(request.org)
                """)
            return try rows.first?.decode(Bool.self, at: 0) ?? false
        } catch let error as PostgresError where OutboxError.refusedInput(error) != nil {
            // The new request is not even valid: it cannot be the one that used the key.
            return false
        }
    }
}

extension IdempotencyCheck {
    /// The job an organization's idempotency key already names, if any.
    public static func existing(org: String, key: String, in database: PostgresDatabase) async throws -> Int64? {
        try await database.query("""
            SELECT id FROM wa_outbox.jobs WHERE org = \(org) AND idempotency_key = \(key)
            """).first?.decode(Int64.self, at: 0)
    }
}
