import Foundation
import OutboxCore
import Testing

@Suite("Retry policy")
struct RetryPolicyTests {
    let policy = RetryPolicy(base: .seconds(2), cap: .seconds(60))
    let later = Date().addingTimeInterval(3600)

    @Test func backoffDoublesWithJitterAndIsCapped() {
        #expect(policy.backoff(afterAttempt: 1, random: 0) == .seconds(1))
        #expect(policy.backoff(afterAttempt: 1, random: 0.999) < .seconds(2))
        #expect(policy.backoff(afterAttempt: 3, random: 0) == .seconds(4))
        #expect(policy.backoff(afterAttempt: 20, random: 0.999) <= .seconds(60))
        #expect(policy.backoff(afterAttempt: 20, random: 0) == .seconds(30))
    }

    @Test func permanentFailuresFailAtOnce() {
        #expect(policy.outcome(of: .permanent(.accountRestricted, "463"), attempt: 1, maxAttempts: 8, deadline: later)
                == .defer_(after: .zero, code: .accountRestricted, message: "463"))
    }

    @Test func transientFailuresRetryUntilTheLimit() {
        guard case .retry(_, .engineError, _) = policy.outcome(of: .transient("503"), attempt: 7, maxAttempts: 8, deadline: later) else {
            Issue.record("expected a retry"); return
        }
        guard case .failed(.timeout, _) = policy.outcome(of: .timeout("slow"), attempt: 8, maxAttempts: 8, deadline: later) else {
            Issue.record("expected the last timeout to fail"); return
        }
    }

    @Test func deferralsSpendNoAttemptUntilTheDeadline() {
        guard case .defer_(_, .sessionUnavailable, _) = policy.outcome(of: .sessionNotConnected("starting"), attempt: 8, maxAttempts: 8, deadline: later) else {
            Issue.record("expected a deferral"); return
        }
        #expect(policy.outcome(of: .rateLimited(retryAfter: .seconds(3)), attempt: 1, maxAttempts: 8, deadline: later)
                == .defer_(after: .seconds(3), code: .rateLimited, message: "rate limited"))
        guard case .failed(.sessionUnavailable, _) = policy.outcome(of: .sessionNotConnected("x"), attempt: 1, maxAttempts: 8, deadline: Date().addingTimeInterval(-1)) else {
            Issue.record("expected failure after the deadline"); return
        }
    }
}

@Suite("Payload decoding")
struct PayloadTests {
    func job(_ kind: JobKind, _ payload: String) -> ClaimedJob {
        ClaimedJob(id: 1, org: "o", sessionID: "s", chat: "1@g.us", kind: kind, waMessageID: "3EB0AA", payload: payload,
                   attempt: 1, maxAttempts: 8, deadline: Date())
    }

    @Test func everyKindDecodes() throws {
        #expect(try WhatsAppOperation(job: job(.send, #"{"type":"text","chat":"1@g.us","text":"hi"}"#)) == .send(id: "3EB0AA", chat: "1@g.us", content: .text("hi")))
        #expect(try WhatsAppOperation(job: job(.send, #"{"type":"poll","chat":"1@g.us","name":"q","options":["a","b"],"multipleAnswers":true}"#))
                == .send(id: "3EB0AA", chat: "1@g.us", content: .poll(name: "q", options: ["a", "b"], multipleAnswers: true)))
        #expect(try WhatsAppOperation(job: job(.send, #"{"type":"location","chat":"1@g.us","latitude":1.5,"longitude":-2}"#))
                == .send(id: "3EB0AA", chat: "1@g.us", content: .location(latitude: 1.5, longitude: -2, name: nil, address: nil)))
        #expect(try WhatsAppOperation(job: job(.send, #"{"type":"contact","chat":"1@g.us","contacts":[{"name":"Ada","phone":"+49 151"}]}"#))
                == .send(id: "3EB0AA", chat: "1@g.us", content: .contacts([.init(name: "Ada", phone: "+49 151")])))
        #expect(try WhatsAppOperation(job: job(.edit, #"{"chat":"1@g.us","messageId":"3EB0AA","text":"new"}"#)) == .edit(id: "3EB0AA", chat: "1@g.us", text: "new"))
        #expect(try WhatsAppOperation(job: job(.revoke, #"{"chat":"1@g.us","messageId":"3EB0AA","sender":"49@s.whatsapp.net"}"#))
                == .revoke(id: "3EB0AA", chat: "1@g.us", sender: "49@s.whatsapp.net"))
    }

    @Test func badPayloadsAreValidationErrorsNamingTheField() {
        #expect(throws: OutboxError.self) { try WhatsAppOperation(job: job(.send, "not json")) }
        do {
            _ = try WhatsAppOperation(job: job(.send, #"{"type":"text","text":42}"#))
            Issue.record("expected a validation error")
        } catch {
            #expect(error.code == .validationError)
            #expect(error.message.contains("text"))
        }
        #expect(throws: OutboxError(.notImplemented, "video messages are not implemented yet")) {
            try WhatsAppOperation(job: job(.send, #"{"type":"video","chat":"1@g.us"}"#))
        }
    }

    @Test func vcardIsBuiltFromNameAndPhone() {
        let vcard = MessageContent.Contact(name: "Ada", phone: "+49 151 234").vcardText
        #expect(vcard.contains("FN:Ada"))
        #expect(vcard.contains("waid=49151234"))
    }
}
