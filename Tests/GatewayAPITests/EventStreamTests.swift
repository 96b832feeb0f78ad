import Crypto
import Foundation
import GatewayAPI
import OutboxCore
import OutboxStore
import PostgresClient
import Synchronization
import TestSupport
import Testing

@Suite("Event stream")
struct EventStreamTests {
    static let org = [("X-Test-Org", "orgA")]

    /// Waits until the hub has `count` open streams.
    func waitForSubscribers(_ hub: EventHub, _ count: Int, within limit: Duration = .seconds(5)) async throws {
        let deadline = ContinuousClock.now + limit
        while hub.subscriberCount != count {
            guard ContinuousClock.now < deadline else {
                Issue.record("expected \(count) streams, the hub has \(hub.subscriberCount)")
                return
            }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    @Test func eventsOfOneOrganizationNeverReachAnother() async throws {
        let fixture = try await EventFixture.make()
        try await fixture.addSession("sa", org: "orgA")
        try await fixture.addSession("sb", org: "orgB")
        let before = try await fixture.enqueue(5, session: "sa", org: "orgA")
        try await fixture.enqueue(5, session: "sb", org: "orgB")
        let hub = fixture.hub()
        try await withGateway(fixture, hub: hub) { port in
            let reading = Task {
                try await readStream(port: port, path: "/api/v1/events?after=0", headers: Self.org) { messages in
                    messages.filter { $0.event == "message.status" }.count >= 10
                }
            }
            try await waitForSubscribers(hub, 1)
            let after = try await fixture.enqueue(5, session: "sa", org: "orgA")
            try await fixture.enqueue(5, session: "sb", org: "orgB")
            let (status, messages) = try await reading.value
            #expect(status == 200)
            #expect(messages.first?.retry == "3000", "the stream starts with retry: 3000")
            let events = messages.filter { $0.event == "message.status" }
            #expect(events.compactMap { $0.json?["outboxId"] as? String } == (before + after).map(String.init))
            #expect(events.allSatisfy { $0.json?["session"] as? String == "sa" })
            let keys = Set(events.first?.json?.keys.map { $0 } ?? [])
            #expect(keys == ["outboxId", "waMessageId", "status", "mode", "timestamp", "session", "errorCode"])
        }
    }

    @Test func resumingWithLastEventIDMissesAndRepeatsNothing() async throws {
        let fixture = try await EventFixture.make()
        try await fixture.addSession("sa", org: "orgA")
        let hub = fixture.hub()
        try await withGateway(fixture, hub: hub) { port in
            var jobs = try await fixture.enqueue(20, session: "sa", org: "orgA")
            let first = try await readStream(port: port, path: "/api/v1/events?after=0", headers: Self.org) { messages in
                messages.filter { $0.id != nil }.count >= 8
            }
            // The client handled 8 (a chunk may have brought more) and resumes after the 8th.
            let seen = Array(first.messages.compactMap(\.id).prefix(8))
            #expect(seen.count == 8)
            // The client went away: the server lets its stream go at once.
            try await waitForSubscribers(hub, 0, within: .seconds(2))

            jobs += try await fixture.enqueue(20, session: "sa", org: "orgA")
            let resumed = Task {
                try await readStream(port: port, path: "/api/v1/events", headers: Self.org + [("Last-Event-ID", String(seen.last!))]) { messages in
                    messages.compactMap(\.id).count >= 42
                }
            }
            try await waitForSubscribers(hub, 1)
            // Live events while the resumed stream replays or right after.
            jobs += try await fixture.enqueue(10, session: "sa", org: "orgA")
            let rest = try await resumed.value.messages.compactMap(\.id)
            let all = seen + rest
            #expect(all.count == 50)
            #expect(Set(all).count == all.count, "no event twice")
            // The stream's order is the order events became visible: (transaction, id).
            let ids = try await fixture.database.query("SELECT id FROM wa_outbox.events WHERE org = 'orgA' ORDER BY tx, id").map { try $0.decode(Int64.self, at: 0) }
            #expect(all == ids, "every event, once, in order")
            #expect(jobs.count == 50)
        }
    }

    /// With no stream open the hub reads nothing; a stream opened later without `Last-Event-ID`
    /// starts at the log's head: none of the events written while nobody listened, all after.
    ///
    /// On a server of its own: the head is where every older write transaction of the cluster has
    /// ended, and a parallel test's long transaction on a shared server held it back behind events
    /// 11–20 (a CI rehearsal under load), which the stream then rightly delivered as new.
    @Test func aStreamOpenedAfterAnIdleSpellStartsAtTheHead() async throws {
        let server = try await PrivateServer.start(.postgres)
        let fixture = try await EventFixture.make(url: server.url)
        try await fixture.addSession("sa", org: "orgA")
        let hub = fixture.hub()
        try await withGateway(fixture, hub: hub) { port in
            try await fixture.enqueue(10, session: "sa", org: "orgA")
            try await Task.sleep(for: .milliseconds(300))
            try await fixture.enqueue(10, session: "sa", org: "orgA")
            let reading = Task {
                try await readStream(port: port, path: "/api/v1/events", headers: Self.org) { messages in
                    messages.filter { $0.event == "message.status" }.count >= 5
                }
            }
            try await waitForSubscribers(hub, 1)
            let live = try await fixture.enqueue(5, session: "sa", org: "orgA")
            let events = try await reading.value.messages.filter { $0.event == "message.status" }
            #expect(events.compactMap { $0.json?["outboxId"] as? String } == live.map(String.init))
        }
        await server.destroy()
    }

    @Test func aSlowClientIsCutOffWithoutHoldingBackAFastOne() async throws {
        let server = try await PrivateServer.start(.postgres)
        let fixture = try await EventFixture.make(url: server.url)
        // A long session id makes each event a few hundred bytes, so the socket buffers fill sooner.
        let session = "s" + String(repeating: "x", count: 300)
        try await fixture.addSession(session, org: "orgA")
        let hub = fixture.hub(buffer: 5_000)
        try await withGateway(fixture, hub: hub) { port in
            let slow = try StalledClient(port: port, path: "/api/v1/events", headers: Self.org)
            try await waitForSubscribers(hub, 1)
            let progress = Progress()
            let fast = Task {
                try await readStream(port: port, path: "/api/v1/events", headers: Self.org, timeout: .seconds(120), progress: progress) { _ in false }
            }
            try await waitForSubscribers(hub, 2)
            var chunks = 0
            var cutAfter: Int?
            while chunks < 40, cutAfter.map({ chunks < $0 + 2 }) ?? true {
                try await fixture.enqueue(1_000, session: session, org: "orgA")
                chunks += 1
                let last = try await fixture.lastEventID()
                // A liveness bound, not a speed target: held back, the fast client would never catch up.
                let deadline = ContinuousClock.now + .seconds(60)
                while progress.current < last {
                    #expect(ContinuousClock.now < deadline, "the fast client is held back after \(chunks) chunks")
                    if ContinuousClock.now >= deadline { break }
                    try await Task.sleep(for: .milliseconds(5))
                }
                if cutAfter == nil, hub.subscriberCount == 1 { cutAfter = chunks }
            }
            #expect(cutAfter != nil, "the stalled client was never cut off")
            #expect(hub.subscriberCount == 1)
            #expect(progress.current == (try await fixture.lastEventID()))
            fast.cancel()
            _ = slow
        }
        await fixture.database.close()
        await server.destroy()
    }

    @Test func finalReturnsAJobsFinalEventOrNilAtTheDeadline() async throws {
        let fixture = try await EventFixture.make()
        try await fixture.addSession("sa", org: "orgA")
        let hub = fixture.hub()
        let running = Task { try await hub.run() }
        defer { running.cancel() }
        // One chat: one lane, so claims take the jobs in order.
        var enqueued: [Int64] = []
        for _ in 0..<3 { enqueued += try await fixture.enqueue(1, session: "sa", org: "orgA") }
        let jobs = enqueued
        let worker = UUID()
        func completeNext() async throws -> Int64 {
            try await fixture.database.withConnection { connection in
                let job = try #require(try await ClaimQuery.claim(workerID: worker, limit: 1, on: connection).jobs.first)
                _ = try await CompletionQuery.complete([Completion(jobID: job.id, claim: job.claim, workerID: worker, outcome: .succeeded)], on: connection)
                return job.id
            }
        }

        // Completed while the request waits: the hub delivers it.
        let waiting = Task { await hub.final(org: "orgA", jobID: jobs[0], until: .now + .seconds(30)) }
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await completeNext() == jobs[0])
        let event = await waiting.value
        #expect(event?.status == "sent")
        #expect(event?.outboxId == String(jobs[0]))

        // Completed before the request subscribed: found in the log at once.
        #expect(try await completeNext() == jobs[1])
        try await Task.sleep(for: .milliseconds(600))  // the hub has read past it: only the log has it now
        let start = ContinuousClock.now
        #expect(await hub.final(org: "orgA", jobID: jobs[1], until: .now + .seconds(30))?.status == "sent")
        #expect(ContinuousClock.now - start < .seconds(5))

        // Never completed, or another organization's: nil at the deadline.
        let waited = ContinuousClock.now
        #expect(await hub.final(org: "orgA", jobID: jobs[2], until: .now + .milliseconds(400)) == nil)
        #expect(ContinuousClock.now - waited >= .milliseconds(400))
        #expect(await hub.final(org: "orgB", jobID: jobs[0], until: .now + .milliseconds(100)) == nil)
    }

    /// A write transaction left open holds the ordered stream back; a synchronous request waiting
    /// for its job is answered anyway, once the job's final event commits.
    @Test func aWaitingRequestIsAnsweredWhileAnOpenTransactionHoldsTheStreamBack() async throws {
        let server = try await PrivateServer.start(.postgres)
        let fixture = try await EventFixture.make(url: server.url)
        try await fixture.addSession("sa", org: "orgA")
        let hub = fixture.hub()
        let running = Task { try await hub.run() }
        let job = try #require(try await fixture.enqueue(1, session: "sa", org: "orgA").first)
        let blocker = try await PostgresConnection.connect(PostgresConfiguration(fixture.url), logger: TestEnvironment.logger)
        try await blocker.execute("BEGIN")
        _ = try await blocker.query("SELECT pg_current_xact_id()")

        let waiting = Task { await hub.final(org: "orgA", jobID: job, until: .now + .seconds(60)) }
        try await Task.sleep(for: .milliseconds(300))
        let worker = UUID()
        try await fixture.database.withConnection { connection in
            let claimed = try #require(try await ClaimQuery.claim(workerID: worker, limit: 1, on: connection).jobs.first)
            _ = try await CompletionQuery.complete([Completion(jobID: claimed.id, claim: claimed.claim, workerID: worker, outcome: .succeeded)], on: connection)
        }
        let event = await waiting.value
        #expect(event?.status == "sent")
        #expect(try await EventLog.after(.start, org: "orgA", in: fixture.database).map(\.status) == ["queued"], "the ordered stream is still held back")
        #expect(await hub.final(org: "orgB", jobID: job, until: .now + .milliseconds(300)) == nil, "another organization's waiter gets nothing")
        try await blocker.execute("ROLLBACK")
        await blocker.close()
        running.cancel()
        await fixture.database.close()
        await server.destroy()
    }

    @Test func ticketsOpenTheStreamWithoutHeadersAndNothingElse() async throws {
        let fixture = try await EventFixture.make()
        try await fixture.addSession("sa", org: "orgA")
        try await fixture.addSession("sb", org: "orgB")
        try await fixture.enqueue(2, session: "sa", org: "orgA")
        try await fixture.enqueue(2, session: "sb", org: "orgB")
        let key = SymmetricKey(size: .bits256)
        let tickets = StreamTickets(secret: key)
        try await withGateway(fixture, hub: fixture.hub(), tickets: tickets) { port in
            let issued = try await request(port: port, method: "POST", "/api/v1/events/tickets", headers: Self.org)
            #expect(issued.status == 200)
            let answer = try JSONSerialization.jsonObject(with: Data(issued.body.utf8)) as? [String: Any]
            let ticket = try #require(answer?["ticket"] as? String)
            #expect(answer?["expiresIn"] as? Int == 60)

            let streamed = try await readStream(port: port, path: "/api/v1/events?after=0&ticket=\(ticket)") { messages in
                messages.filter { $0.event == "message.status" }.count >= 2
            }
            #expect(streamed.status == 200)
            #expect(streamed.messages.compactMap { $0.json?["session"] as? String } == ["sa", "sa"])

            var tampered = Array(ticket)
            tampered[tampered.count - 3] = tampered[tampered.count - 3] == "A" ? "B" : "A"
            let expired = tickets.issue(for: Principal(org: "orgA", capabilities: [.read], subject: "t"), now: Date() - 120)
            let foreign = StreamTickets(secret: SymmetricKey(size: .bits256)).issue(for: Principal(org: "orgA", capabilities: [.read], subject: "t"))
            for bad in [String(tampered), expired, foreign, "garbage"] {
                let refused = try await request(port: port, "/api/v1/events?ticket=\(bad)")
                #expect(refused.status == 401)
                #expect(refused.body.contains("\"code\":\"unauthorized\""))
            }
            #expect(try await request(port: port, "/api/v1/events").status == 401)
            #expect(try await request(port: port, method: "POST", "/api/v1/events/tickets").status == 401)
            #expect(try await request(port: port, "/api/v1/events", headers: [("X-Test-Org", "orgA"), ("X-Test-Capabilities", "operate")]).status == 403)
            #expect(try await request(port: port, "/api/v1/events?after=x", headers: Self.org).status == 400)
        }
    }

    @Test func aSharedSecretComesFromTheEnvironment() throws {
        let principal = Principal(org: "orgA", capabilities: [.send], subject: "k")
        let secret = String(repeating: "s", count: 32)
        let one = try StreamTickets.fromEnvironment([StreamTickets.secretVariable: secret])
        let other = try StreamTickets.fromEnvironment([StreamTickets.secretVariable: secret])
        #expect(other.verify(one.issue(for: principal)) == principal, "two processes with one secret accept each other's tickets")
        #expect(try StreamTickets.fromEnvironment([:]).verify(one.issue(for: principal)) == nil)
        #expect(throws: StreamTickets.ConfigurationError.self) { try StreamTickets.fromEnvironment([StreamTickets.secretVariable: "short"]) }
    }
}
