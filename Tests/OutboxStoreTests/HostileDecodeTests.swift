import Foundation
import OutboxCore
import PropertyBased
import Testing
import TestSupport

/// The Swift library's own check of what a claimed job carries (`WhatsAppOperation(job:)`, whose
/// content rules repeat `wa_outbox.validate_payload`'s): a hostile payload in a row, written around
/// the SQL function, fails alone with `validation_error` and never crashes the worker.
///
/// The decoder reads what a send says (text, poll, location, contacts); the chat, message id and
/// sender come from the job's columns, which the SQL function wrote, so a hostile `chat` or
/// `sender` in the payload is the SQL function's to refuse (HostileEnqueueTests).
@Suite("Hostile input: decoding a claimed job")
struct HostileDecodeTests {
    static let cases = 3_000

    /// Categories whose payload says something the decoder itself must refuse.
    static let decoderRefuses: Set<String> = ["oversized text", "poll option count", "poll duplicates", "coordinates out of range",
                                              "coordinates not numbers", "malformed vCard", "truncated JSON"]

    static func job(_ payload: HostilePayload) -> ClaimedJob {
        ClaimedJob(id: 1, org: "org1", sessionID: "s1", chat: HostileInput.goodChat, kind: JobKind(rawValue: payload.kind.rawValue)!,
                   waMessageID: "3EB0AAAAAAAAAAAAAAAAAA", payload: payload.json, attempt: 1, maxAttempts: 8, deadline: Date() + 3_600)
    }

    @Test func everyHostileContentIsAValidationErrorNeverACrash() async throws {
        var run = 0
        var refused = 0
        await propertyCheck(count: Self.cases, input: HostileEnqueueTests.hostile) { payload async throws in
            run += 1
            do {
                let operation = try WhatsAppOperation(job: Self.job(payload))
                #expect(!Self.decoderRefuses.contains(payload.category), "decoded \(payload) as \(operation)")
            } catch let error as OutboxError {
                refused += 1
                #expect(error.code == .validationError, "\(payload): \(error)")
            } catch {
                Issue.record("\(payload): \(error)")
            }
        }
        print("hostile-input cases: Swift library decode \(run) (\(refused) refused)")
        #expect(run == Self.cases)
        #expect(refused > Self.cases / 3)
    }

    @Test func theDecoderKeepsTheSQLRulesAtTheirEdges() throws {
        func decode(_ json: String, _ kind: JobKind = .send) throws -> WhatsAppOperation {
            try WhatsAppOperation(job: ClaimedJob(id: 1, org: "o", sessionID: "s", chat: "1@g.us", kind: kind, waMessageID: "3EB0A",
                                                  payload: json, attempt: 1, maxAttempts: 1, deadline: Date()))
        }
        let text65536 = String(repeating: "🙂", count: 65_536)
        #expect(try decode(#"{"type":"text","text":"\#(text65536)"}"#) == .send(id: "3EB0A", chat: "1@g.us", content: .text(text65536)))
        #expect(throws: OutboxError.self) { try decode(#"{"type":"text","text":"\#(text65536)a"}"#) }
        #expect(throws: OutboxError.self) { try decode(#"{"type":"text","text":" \n\t"}"#) }
        let twelve = (1...12).map { "\"o\($0)\"" }.joined(separator: ",")
        #expect(throws: Never.self) { try decode(#"{"type":"poll","name":"q","options":[\#(twelve)]}"#) }
        #expect(throws: OutboxError.self) { try decode(#"{"type":"poll","name":"q","options":[\#(twelve),"o13"]}"#) }
        #expect(throws: OutboxError.self) { try decode(#"{"type":"poll","name":"q","options":["a","a"]}"#) }
        #expect(throws: Never.self) { try decode(#"{"type":"location","latitude":-90,"longitude":180}"#) }
        #expect(throws: OutboxError.self) { try decode(#"{"type":"location","latitude":90.0001,"longitude":0}"#) }
        let vcard = #"BEGIN:VCARD\nVERSION:3.0\nFN:Jane\nEND:VCARD\n"#
        #expect(throws: Never.self) { try decode(#"{"type":"contact","contacts":[{"name":"J","vcard":"\#(vcard)"}]}"#) }
        #expect(throws: OutboxError.self) { try decode(#"{"type":"contact","contacts":[{"name":"J","vcard":"BEGIN:VCARD\nFN:J"}]}"#) }
        #expect(throws: OutboxError.self) { try decode(#"{"text":"\#(text65536)a"}"#, .edit) }
    }
}
