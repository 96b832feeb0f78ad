import Foundation
import OutboxCore
import PostgresClient

/// Checks edits and revokes before they are dispatched, one query per claimed batch.
///
/// WhatsApp accepts an edit after 15 minutes or a revoke after 48 hours, and recipients silently
/// ignore it; so the worker refuses them itself, with `edit_window_expired` or
/// `revoke_window_expired`, and never dispatches them. An edit of a non-text message, or of a
/// message whose send failed, fails with its own code.
enum Preflight {
    static let editWindow: TimeInterval = 15 * 60
    static let revokeWindow: TimeInterval = 48 * 3600

    struct Original {
        var state: String
        var sentAt: Date?
        var type: String?
        var engineMessageID: String?
    }

    struct Verdict {
        /// The failure for each job that must not be dispatched.
        var refused: [Int64: Outcome] = [:]
        /// For edits and revokes: the id the engine gave the original message, when it is not ours.
        var engineTargets: [Int64: String] = [:]
    }

    static func check(_ jobs: [ClaimedJob], on connection: PostgresConnection, now: Date = Date()) async throws -> Verdict {
        let targets = jobs.filter { $0.kind != .send }
        guard !targets.isEmpty else { return Verdict() }
        let rows = try await connection.query("""
            SELECT j.session_id, j.wa_message_id, j.state, j.sent_at, j.payload->>'type', j.engine_message_id
            FROM wa_outbox.jobs j
            JOIN unnest(\(targets.map(\.sessionID))::text[], \(targets.map(\.waMessageID))::text[]) AS t(session_id, mid)
              ON j.session_id = t.session_id AND j.wa_message_id = t.mid
            WHERE j.kind = 'send'
            """)
        var originals: [String: Original] = [:]
        for row in rows {
            originals["\(try row.decode(String.self, at: 0))\u{0}\(try row.decode(String.self, at: 1))"] =
                Original(state: try row.decode(at: 2), sentAt: try row.decode(at: 3), type: try row.decode(at: 4), engineMessageID: try row.decode(at: 5))
        }
        var verdict = Verdict()
        for job in targets {
            let payload = try? JSONSerialization.jsonObject(with: Data(job.payload.utf8)) as? [String: Any]
            var sentAt = (payload?["sentAt"] as? Double).map { Date(timeIntervalSince1970: $0) }
            if let original = originals["\(job.sessionID)\u{0}\(job.waMessageID)"] {
                if original.state != "succeeded" {
                    verdict.refused[job.id] = .failed(code: .notFound, message: "message \(job.waMessageID) was never sent (its send is \(original.state))")
                    continue
                }
                if job.kind == .edit && original.type != "text" {
                    verdict.refused[job.id] = .failed(code: .validationError, message: "only text messages can be edited; \(job.waMessageID) is a \(original.type ?? "non-text") message")
                    continue
                }
                sentAt = original.sentAt ?? sentAt
                if let engineID = original.engineMessageID, engineID != job.waMessageID { verdict.engineTargets[job.id] = engineID }
            }
            guard let sentAt else { continue }
            let age = now.timeIntervalSince(sentAt)
            if job.kind == .edit && age > editWindow {
                verdict.refused[job.id] = .failed(code: .editWindowExpired, message: "message \(job.waMessageID) was sent \(Int(age / 60)) minutes ago; WhatsApp allows edits for 15 minutes")
            } else if job.kind == .revoke && age > revokeWindow {
                verdict.refused[job.id] = .failed(code: .revokeWindowExpired, message: "message \(job.waMessageID) was sent \(Int(age / 3600)) hours ago; WhatsApp allows deleting for everyone for 48 hours")
            }
        }
        return verdict
    }
}
