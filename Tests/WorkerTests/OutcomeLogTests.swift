import Foundation
import JobDispatch
import Logging
import NIOConcurrencyHelpers
import OutboxCore
import Testing

/// Each outcome is one log line carrying the job's, session's and organization's ids, and never
/// the message's body; below the line's level nothing is formatted at all.
@Suite("Outcome log lines")
struct OutcomeLogTests {
    /// Keeps each record's level, message and metadata (the logger's own and the call's, merged).
    struct Capture: LogHandler {
        let records: NIOLockedValueBox<[(Logger.Level, String, Logger.Metadata)]>
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String, file: String, function: String, line: UInt) {
            records.withLockedValue { $0.append((level, "\(message)", self.metadata.merging(metadata ?? [:]) { $1 })) }
        }
    }

    let job = ClaimedJob(id: 4_242, org: "org-7", sessionID: "session-9", chat: "5511999990000@s.whatsapp.net", kind: .send,
                         waMessageID: "wamid-1", payload: #"{"text":"the secret body"}"#, attempt: 2, maxAttempts: 5,
                         deadline: Date().addingTimeInterval(60))

    func lines(at level: Logger.Level, _ outcomes: [Outcome]) -> [(Logger.Level, String, Logger.Metadata)] {
        let records = NIOLockedValueBox<[(Logger.Level, String, Logger.Metadata)]>([])
        let logger = Logger(label: "test") { _ in Capture(records: records, logLevel: level) }
        for outcome in outcomes { OutcomeLog.log(outcome, of: job, logger: logger) }
        return records.withLockedValue { $0 }
    }

    @Test func everyLineCarriesTheIdsAndNoBody() {
        let outcomes: [Outcome] = [
            .succeeded,
            .failed(code: .invalidRecipient, message: "5511999990000 is not on WhatsApp"),
            .retry(after: .seconds(2), code: .timeout, message: "no answer in 30 s"),
            .defer_(after: .seconds(1), code: .rateLimited, message: "the session's rate limit"),
        ]
        let written = lines(at: .trace, outcomes)
        #expect(written.map(\.1) == ["job sent", "job failed", "job will retry", "job deferred"])
        for (_, message, metadata) in written {
            #expect(metadata["job.id"] == "4242", "\(message)")
            #expect(metadata["session.id"] == "session-9", "\(message)")
            #expect(metadata["org.id"] == "org-7", "\(message)")
            #expect(!"\(message) \(metadata)".contains("the secret body"), "\(message)")
        }
    }

    @Test func aSendAtWarningLevelWritesNothingAndAFailureStillCarriesTheIds() {
        let written = lines(at: .warning, [.succeeded, .failed(code: .engineError, message: "the engine answered 500")])
        #expect(written.count == 1)
        #expect(written.first?.0 == .warning)
        #expect(written.first?.2["job.id"] == "4242")
        #expect(written.first?.2["org.id"] == "org-7")
    }
}
