import Foundation
import OutboxCore
import OutboxStore
import PostgresClient

/// Checks edits and revokes before they are dispatched, one query per claimed batch.
///
/// WhatsApp accepts an edit after its window (`MessageWindows`) and recipients silently ignore
/// it; so the gateway refuses it itself, with `edit_window_expired` or `revoke_window_expired`,
/// and never dispatches it. An edit of a non-text message, or of a message whose send failed,
/// fails with its own code.
public enum Preflight {
    public struct Verdict: Sendable {
        /// The failure for each job that must not be dispatched.
        public var refused: [Int64: Outcome] = [:]
        /// For edits and revokes: the id the engine gave the original message, when it is not ours.
        public var engineTargets: [Int64: String] = [:]
    }

    public static func check(_ jobs: [ClaimedJob], on connection: PostgresConnection, now: Date = Date()) async throws -> Verdict {
        let targets = jobs.filter { $0.kind != .send }
        guard !targets.isEmpty else { return Verdict() }
        let originals = try await OriginalMessages.find(targets.map { ($0.sessionID, $0.waMessageID) }, on: connection)
        var verdict = Verdict()
        for job in targets {
            let payload = try? JSONSerialization.jsonObject(with: Data(job.payload.utf8)) as? [String: Any]
            var sentAt = (payload?["sentAt"] as? Double).map { Date(timeIntervalSince1970: $0) }
            if let original = originals[OriginalMessages.key(job.sessionID, job.waMessageID)] {
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
            if job.kind == .edit && age > Double(MessageWindows.edit.components.seconds) {
                verdict.refused[job.id] = .failed(code: .editWindowExpired, message: "message \(job.waMessageID) was sent \(Int(age / 60)) minutes ago; WhatsApp allows edits for 15 minutes")
            } else if job.kind == .revoke && age > Double(MessageWindows.revoke.components.seconds) {
                verdict.refused[job.id] = .failed(code: .revokeWindowExpired, message: "message \(job.waMessageID) was sent \(Int(age / 3600)) hours ago; WhatsApp allows deleting for everyone for 48 hours")
            }
        }
        return verdict
    }
}
