import AsyncHTTPClient
import Foundation
import HTTPTypes
import NIOFoundationCompat
import GatewayAPI
import HTTPSurface
import Hummingbird
import HummingbirdTesting
import NIOCore
import NIOHTTP1
import OutboxCore
import OutboxStore
import PostgresClient
import Simulator
import Coordination
import Testing
import TestSupport

/// The seed's message endpoints over real HTTP, on a real database, Redis and worker.
@Suite("Gateway API: messages")
struct MessageRoutesTests {
    static let text = #"{"type":"text","chat":"4915112345678@s.whatsapp.net","text":"hello"}"#

    func post(_ client: some TestClientProtocol, _ path: String, body: String = text, headers fields: HTTPFields = headers()) async throws -> TestResponse {
        try await client.execute(uri: path, method: .post, headers: fields, body: ByteBuffer(string: body))
    }

    @Test func anAsyncSendIsQueuedAt202AndItsResultReadable() async throws {
        let fixture = try await GatewayFixture.make()
        try await fixture.addSession("s1")
        let app = Application(router: fixture.router())
        try await app.test(.live) { client in
            let accepted = try await post(client, "/api/v1/sessions/s1/messages?async=true")
            #expect(accepted.status == .accepted)
            let result = try sendResult(accepted)
            #expect(result.mode == "async" && result.status == "queued" && !result.replayed && result.waMessageId.hasPrefix("3EB0"))
            try await fixture.withWorker {
                for _ in 0..<200 where try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'") == 0 {
                    try await Task.sleep(for: .milliseconds(20))
                }
            }
            let shown = try await client.execute(uri: "/api/v1/messages/\(result.outboxId)", method: .get, headers: headers())
            #expect(shown.status == .ok)
            let body = try JSONSerialization.jsonObject(with: Data(buffer: shown.body)) as? [String: Any]
            #expect((body?["result"] as? [String: Any])?["status"] as? String == "sent")
            #expect((body?["events"] as? [Any])?.count == 2)
            // Another organization's message does not exist for it.
            let foreign = try await client.execute(uri: "/api/v1/messages/\(result.outboxId)", method: .get, headers: headers(org: "org2"))
            #expect(foreign.status == .notFound)
            #expect(try envelope(foreign).code == "not_found")
        }
        await fixture.close()
    }

    @Test func aSynchronousSendAnswers200WithTheFinalResult() async throws {
        let fixture = try await GatewayFixture.make()
        try await fixture.addSession("s1")
        let app = Application(router: fixture.router())
        try await fixture.withWorker {
            try await app.test(.live) { client in
                let response = try await post(client, "/api/v1/sessions/s1/messages")
                #expect(response.status == .ok)
                let result = try sendResult(response)
                #expect(result.mode == "sync" && result.status == "sent")
                // Edit and revoke it, synchronously.
                let edited = try await client.execute(uri: "/api/v1/sessions/s1/messages/\(result.waMessageId)", method: .patch, headers: headers(),
                                                      body: ByteBuffer(string: #"{"chat":"4915112345678@s.whatsapp.net","text":"hello again"}"#))
                #expect(edited.status == .ok)
                #expect(try sendResult(edited).status == "edited")
                let revoked = try await client.execute(uri: "/api/v1/sessions/s1/messages/\(result.waMessageId)", method: .delete, headers: headers(),
                                                       body: ByteBuffer(string: #"{"chat":"4915112345678@s.whatsapp.net"}"#))
                #expect(revoked.status == .ok)
                #expect(try sendResult(revoked).status == "revoked")
            }
        }
        #expect(fixture.simulator.stats.delivered == 1)
        await fixture.close()
    }

    @Test func refusalsCarryTheirStatusAndCodeAndQueueNothing() async throws {
        let fixture = try await GatewayFixture.make()
        try await fixture.addSession("s1")
        try await fixture.addSession("theirs", org: "org2")
        let app = Application(router: fixture.router())
        try await app.test(.live) { client in
            try expectError(try await post(client, "/api/v1/sessions/s1/messages", body: #"{"type":"image","chat":"1@s.whatsapp.net"}"#), .notImplemented, "not_implemented")
            try expectError(try await post(client, "/api/v1/sessions/s1/messages", body: #"{"chat":"1@s.whatsapp.net"}"#), .badRequest, "validation_error", field: "type")
            try expectError(try await post(client, "/api/v1/sessions/s1/messages", body: "not json"), .badRequest, "validation_error", field: "body")
            try expectError(try await post(client, "/api/v1/sessions/theirs/messages"), .notFound, "not_found")
            try expectError(try await post(client, "/api/v1/sessions/nobody/messages"), .notFound, "not_found")
            // An async send has no lookup of its own: the enqueue function refuses the session.
            try expectError(try await post(client, "/api/v1/sessions/theirs/messages?async=true"), .notFound, "not_found")
            try expectError(try await post(client, "/api/v1/sessions/nobody/messages?async=true"), .notFound, "not_found")
            try expectError(try await client.execute(uri: "/api/v1/sessions/s1/messages", method: .post, body: ByteBuffer(string: Self.text)),
                            .unauthorized, "unauthorized")
            try expectError(try await post(client, "/api/v1/sessions/s1/messages", headers: headers(capabilities: "read")), .forbidden, "forbidden")
            try expectError(try await post(client, "/api/v1/sessions/s1/messages?async=maybe"), .badRequest, "validation_error", field: "async")
            let huge = #"{"type":"text","chat":"1@s.whatsapp.net","text":""# + String(repeating: "x", count: 600_000) + #""}"#
            try expectError(try await post(client, "/api/v1/sessions/s1/messages", body: huge), .contentTooLarge, "payload_too_large")
            try expectError(try await client.execute(uri: "/api/v1/sessions/s1/messages/3EB0AAAA", method: .patch, headers: headers(),
                                                     body: ByteBuffer(string: #"{"chat":"1@s.whatsapp.net"}"#)), .badRequest, "validation_error", field: "text")
        }
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs") == 0)
        await fixture.close()
    }

    /// PostgreSQL stores no NUL character (JSON "\u0000") in text or jsonb: a body carrying one is
    /// the caller's mistake, 400, not a 500 from the database (found by schemathesis); so is a
    /// message or session id with one (`%00`, percent-decoded: a control character).
    @Test func aNULCharacterIsRefusedAsAValidationErrorAndQueuesNothing() async throws {
        let fixture = try await GatewayFixture.make()
        try await fixture.addSession("s1")
        let app = Application(router: fixture.router())
        try await app.test(.live) { client in
            let chat = "4915112345678@s.whatsapp.net"
            for body in [#"{"type":"text","chat":"\#(chat)","text":"a\u0000b"}"#, #"{"type":"text","chat":"\#(chat)","text":"a","x":{"":"\u0000"}}"#] {
                try expectError(try await post(client, "/api/v1/sessions/s1/messages?async=true", body: body), .badRequest, "validation_error")
            }
            for method in [HTTPRequest.Method.patch, .delete] {
                let extra = try await client.execute(uri: "/api/v1/sessions/s1/messages/3EB0AAAA", method: method, headers: headers(),
                                                     body: ByteBuffer(string: #"{"chat":"\#(chat)","text":"b","x":["\u0000"]}"#))
                try expectError(extra, .badRequest, "validation_error")
                let mid = try await client.execute(uri: "/api/v1/sessions/s1/messages/3EB0%00", method: method, headers: headers(),
                                                   body: ByteBuffer(string: #"{"chat":"\#(chat)","text":"b"}"#))
                try expectError(mid, .badRequest, "validation_error")
            }
            try expectError(try await post(client, "/api/v1/sessions/s%001/messages?async=true"), .badRequest, "validation_error")
        }
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs") == 0)
        await fixture.close()
    }

    @Test func anIdempotencyKeyReturnsTheOriginalAndRefusesAnotherRequest() async throws {
        let fixture = try await GatewayFixture.make()
        try await fixture.addSession("s1")
        let app = Application(router: fixture.router())
        try await app.test(.live) { client in
            let first = try sendResult(try await post(client, "/api/v1/sessions/s1/messages?async=true", headers: headers(["Idempotency-Key": "order-42"])))
            let again = try sendResult(try await post(client, "/api/v1/sessions/s1/messages?async=true", headers: headers(["Idempotency-Key": "\"order-42\""])))
            #expect(again.replayed && again.outboxId == first.outboxId && again.waMessageId == first.waMessageId)
            let other = try await post(client, "/api/v1/sessions/s1/messages?async=true",
                                       body: #"{"type":"text","chat":"4915112345678@s.whatsapp.net","text":"something else"}"#,
                                       headers: headers(["Idempotency-Key": "order-42"]))
            #expect(other.status == .unprocessableContent)
            #expect(try envelope(other).code == "idempotency_key_reused")
            // Keys are per organization.
            try await fixture.addSession("s2", org: "org2")
            let theirs = try sendResult(try await post(client, "/api/v1/sessions/s2/messages?async=true", headers: headers(org: "org2", ["Idempotency-Key": "order-42"])))
            #expect(!theirs.replayed && theirs.outboxId != first.outboxId)
        }
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs") == 2)
        await fixture.close()
    }

    @Test func fiftyConcurrentRequestsWithOneKeyMakeOneJobAndOneDispatch() async throws {
        let fixture = try await GatewayFixture.make()
        try await fixture.addSession("s1")
        let app = Application(router: fixture.router())
        try await app.test(.live) { client in
            // The live test client sends one request at a time on one connection; a client with
            // a connection per request makes the fifty overlap at the server.
            let port = try #require(client.port)
            let results = try await withThrowingTaskGroup(of: SendResult?.self) { group in
                for _ in 0..<50 {
                    group.addTask {
                        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/api/v1/sessions/s1/messages?async=true")
                        request.method = .POST
                        for field in headers(["Idempotency-Key": "burst"]) { request.headers.add(name: field.name.rawName, value: field.value) }
                        request.body = .bytes(ByteBuffer(string: Self.text))
                        let response = try await HTTPClient.wide.execute(request, timeout: .seconds(120))
                        let body = try await response.body.collect(upTo: 1 << 20)
                        return response.status == .accepted ? try JSONDecoder().decode(SendResult.self, from: Data(buffer: body)) : nil
                    }
                }
                return try await group.reduce(into: [SendResult?]()) { $0.append($1) }
            }
            let answered = results.compactMap { $0 }
            #expect(answered.count == 50, "every request gets the one result (none conflicted)")
            #expect(Set(answered.map(\.outboxId)).count == 1)
            #expect(answered.filter { !$0.replayed }.count == 1)
        }
        try await fixture.withWorker {
            for _ in 0..<300 where try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'") == 0 {
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs") == 1)
        #expect(fixture.simulator.stats.delivered == 1)
        await fixture.close()
    }

    @Test func overTheRateLimitASyncSendGets429AndAnAsyncOneIsQueued() async throws {
        let fixture = try await GatewayFixture.make()
        try await fixture.addSession("slow", limits: SessionLimits(ratePerSecond: 0.1, burst: 1, pacing: false))
        let app = Application(router: fixture.router())
        try await fixture.withWorker {
            try await app.test(.live) { client in
                #expect(try await post(client, "/api/v1/sessions/slow/messages").status == .ok)
                let refused = try await post(client, "/api/v1/sessions/slow/messages")
                #expect(refused.status == .tooManyRequests)
                #expect(try envelope(refused).code == "rate_limited")
                let retryAfter = try #require(refused.headers[.retryAfter].flatMap { Int($0) })
                #expect(retryAfter >= 1 && retryAfter <= 10)
                #expect(try await post(client, "/api/v1/sessions/slow/messages?async=true").status == .accepted)
            }
        }
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs") == 2, "the refused synchronous send left nothing queued")
        await fixture.close()
    }

    @Test func aPausedSessionRefusesSyncSendsAndQueuesAsyncOnes() async throws {
        let fixture = try await GatewayFixture.make()
        try await fixture.addSession("p")
        try await fixture.database.query("UPDATE wa_outbox.sessions SET state = 'paused', state_reason = 'maintenance' WHERE id = 'p'")
        let app = Application(router: fixture.router())
        try await app.test(.live) { client in
            let refused = try await post(client, "/api/v1/sessions/p/messages")
            #expect(refused.status == .conflict)
            #expect(try envelope(refused).code == "session_unavailable")
            #expect(try await post(client, "/api/v1/sessions/p/messages?async=true").status == .accepted)
        }
        await fixture.close()
    }

    /// When WhatsApp does not answer in time, the answer names the job, which goes on as an async one.
    @Test func aSynchronousSendNotAnsweredInTimeNamesItsJobAndCarriesOn() async throws {
        let fixture = try await GatewayFixture.make()
        try await fixture.addSession("s1")
        let app = Application(router: fixture.router(syncTimeout: .milliseconds(300)))
        try await app.test(.live) { client in
            let pending = try await post(client, "/api/v1/sessions/s1/messages")
            #expect(pending.status == .accepted)
            let result = try sendResult(pending)
            #expect(result.mode == "async")
            #expect(pending.headers[.location] == "/api/v1/messages/\(result.outboxId)")
        }
        try await fixture.withWorker {
            for _ in 0..<200 where try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'") == 0 {
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'") == 1)
        await fixture.close()
    }
}

func expectError(_ response: TestResponse, _ status: HTTPResponse.Status, _ code: String, field: String? = nil,
                 sourceLocation: SourceLocation = #_sourceLocation) throws {
    #expect(response.status == status, sourceLocation: sourceLocation)
    let error = try envelope(response)
    #expect(error.code == code, "\(error.message)", sourceLocation: sourceLocation)
    #expect(!error.message.isEmpty, sourceLocation: sourceLocation)
    if let field { #expect(error.details["field"] == field, sourceLocation: sourceLocation) }
}
