import Coordination
import Foundation
import HTTPSurface
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import OutboxCore
import OutboxStore
import PostgresClient
import Simulator
import Testing

/// One organization cannot see, edit, revoke or dispatch through another's messages and sessions
/// through the gateway API, and idempotency keys and rate limits never cross organizations.
/// (Streams: `EventStreamTests.eventsOfOneOrganizationNeverReachAnother` and the ticket test; the
/// admin API's and the CLI's org filters: WorkerTests' `TenantOperationsTests`.)
@Suite("Tenant isolation: the gateway API")
struct TenantIsolationTests {
    static let chat = "4915112345678@s.whatsapp.net"
    static let text = #"{"type":"text","chat":"\#(chat)","text":"hello"}"#

    func send(_ client: some TestClientProtocol, session: String, org: String, body: String = text, key: String? = nil,
              async: Bool = true) async throws -> TestResponse {
        try await client.execute(uri: "/api/v1/sessions/\(session)/messages\(async ? "?async=true" : "")", method: .post,
                                 headers: headers(org: org, key.map { ["Idempotency-Key": $0] } ?? [:]), body: ByteBuffer(string: body))
    }

    @Test func anotherOrganizationsMessagesAndSessionsDoNotExistForIt() async throws {
        let fixture = try await GatewayFixture.make()
        try await fixture.addSession("ours", org: "org1")
        try await fixture.addSession("theirs", org: "org2")
        let app = Application(router: fixture.router(syncTimeout: .seconds(2)))
        try await app.test(.router) { client in
            let mine = try sendResult(try await send(client, session: "ours", org: "org1"))
            let jobsBefore = try await fixture.count("SELECT count(*) FROM wa_outbox.jobs")

            // See: the same 404 as a message that does not exist, so ids do not leak either.
            let seen = try await client.execute(uri: "/api/v1/messages/\(mine.outboxId)", method: .get, headers: headers(org: "org2"))
            let missing = try await client.execute(uri: "/api/v1/messages/999999", method: .get, headers: headers(org: "org2"))
            #expect(seen.status == .notFound && missing.status == .notFound)
            #expect(try envelope(seen).message == envelope(missing).message)

            // Dispatch through another's session, edit or revoke there: not found, nothing queued.
            for (method, uri, body) in [(HTTPRequest.Method.post, "/api/v1/sessions/ours/messages?async=true", Self.text),
                                        (.patch, "/api/v1/sessions/ours/messages/\(mine.waMessageId)", #"{"chat":"\#(Self.chat)","text":"mine now"}"#),
                                        (.delete, "/api/v1/sessions/ours/messages/\(mine.waMessageId)", #"{"chat":"\#(Self.chat)"}"#)] {
                let refused = try await client.execute(uri: uri, method: method, headers: headers(org: "org2"), body: ByteBuffer(string: body))
                #expect(refused.status == .notFound, "\(method) \(uri)")
                #expect(try envelope(refused).code == "not_found")
            }
            // Through its own session, another's message id is not a message it sent.
            for (method, body) in [(HTTPRequest.Method.patch, #"{"chat":"\#(Self.chat)","text":"mine now"}"#), (.delete, #"{"chat":"\#(Self.chat)"}"#)] {
                let refused = try await client.execute(uri: "/api/v1/sessions/theirs/messages/\(mine.waMessageId)", method: method,
                                                       headers: headers(org: "org2"), body: ByteBuffer(string: body))
                #expect(refused.status == .notFound, "\(method) through its own session")
            }
            #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs") == jobsBefore)
        }
        // The SQL function, called as any language calls it, keeps the same line.
        await #expect(throws: OutboxError(.notFound, "session ours not found in organization org2")) {
            try await Outbox.enqueue(EnqueueRequest(org: "org2", session: "ours", kind: .send, payload: Self.text), in: fixture.database)
        }
        // And a session id is one organization's only: the other cannot take it over.
        await #expect(throws: OutboxError.self) {
            try await SessionRegistry.upsert(SessionRecord(id: "ours", org: "org2", engine: "sim"), in: fixture.database)
        }
        #expect(try await SessionRegistry.find("ours", in: fixture.database)?.org == "org1")
        await fixture.close()
    }

    @Test func idempotencyKeysNeverCrossOrganizations() async throws {
        let fixture = try await GatewayFixture.make()
        try await fixture.addSession("ours", org: "org1")
        try await fixture.addSession("theirs", org: "org2")
        let app = Application(router: fixture.router())
        try await app.test(.router) { client in
            let first = try sendResult(try await send(client, session: "ours", org: "org1", key: "shared-key"))
            // The same key with another body: for org2 a new request, not a reuse (422) of org1's,
            // and it never answers with org1's job.
            let other = #"{"type":"text","chat":"\#(Self.chat)","text":"something else"}"#
            let theirs = try await send(client, session: "theirs", org: "org2", body: other, key: "shared-key")
            #expect(theirs.status == .accepted)
            let result = try sendResult(theirs)
            #expect(!result.replayed && result.outboxId != first.outboxId && result.waMessageId != first.waMessageId)
            // Each organization's retry finds its own job.
            #expect(try sendResult(try await send(client, session: "ours", org: "org1", key: "shared-key")).outboxId == first.outboxId)
            #expect(try sendResult(try await send(client, session: "theirs", org: "org2", body: other, key: "shared-key")).outboxId == result.outboxId)
        }
        // The Redis lock of a key is the organization's too: org1 holding "k" does not make org2 wait.
        try await fixture.coordinator.withIdempotencyLock(org: "org1", key: "k", wait: .milliseconds(100)) {
            try await fixture.coordinator.withIdempotencyLock(org: "org2", key: "k", wait: .milliseconds(100)) {}
        }
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs") == 2)
        await fixture.close()
    }

    /// One organization at its session's rate limit does not slow another's synchronous sends.
    @Test func rateLimitsNeverCrossOrganizations() async throws {
        let fixture = try await GatewayFixture.make()
        let slow = SessionLimits(ratePerSecond: 0.01, burst: 1, pacing: false)
        try await fixture.addSession("ours", org: "org1", limits: slow)
        try await fixture.addSession("theirs", org: "org2", limits: slow)
        // Generous: a synchronous answer here is about limits, not speed (the suite runs beside others).
        let app = Application(router: fixture.router(syncTimeout: .seconds(60)))
        try await fixture.withWorker {
            try await app.test(.router) { client in
                // org1's one send of its budget: the worker's dispatch consumes it.
                #expect(try await send(client, session: "ours", org: "org1").status == .accepted)
                let deadline = ContinuousClock.now + .seconds(120)
                while try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'") < 1, ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(20))
                }
                let limited = try await send(client, session: "ours", org: "org1", async: false)
                #expect(limited.status == .tooManyRequests)
                #expect(try envelope(limited).code == "rate_limited")
                // org2's session has its own budget: its first synchronous send goes.
                #expect(try await send(client, session: "theirs", org: "org2", async: false).status == .ok)
            }
        }
        #expect(fixture.simulator.stats.delivered == 2)
        await fixture.close()
    }
}
