import Engines
import Foundation
import OutboxCore
import OutboxStore
import PostgresClient
import Simulator
import Synchronization
import Testing
import TestSupport

/// A session's slots (issue #21): where a session's limits let sends go back to back, one claim
/// gives each free slot of the session up to a run's worth of jobs from several of its chats, sent
/// one after another by one worker, so a broadcast (one job a chat) costs one session update per
/// slot instead of one per job. The cap still bounds the sends at once.
@Suite("Slots of a session")
struct SlotTests {
    let worker = UUID()

    func claim(_ fixture: Fixture, limit: Int = 100) async throws -> ClaimQuery.Batch {
        try await fixture.database.withConnection { try await ClaimQuery.claim(workerID: worker, limit: limit, runs: RunTests.runs, on: $0) }
    }

    func complete(_ fixture: Fixture, _ jobs: some Collection<ClaimedJob>) async throws {
        _ = try await fixture.database.withConnection { connection in
            try await CompletionQuery.complete(jobs.map { Completion(jobID: $0.id, claim: $0.claim, workerID: worker, outcome: .succeeded) }, on: connection)
        }
    }

    func inFlight(_ fixture: Fixture, _ session: String) async throws -> Int {
        try await fixture.count("SELECT in_flight::int8 FROM wa_outbox.sessions WHERE id = '\(session)'")
    }

    /// One job in each of 30 chats of a session with one slot: a claim takes ten of them (the
    /// oldest chats first) as one run; the session takes nothing more until all ten are done.
    @Test func aSlotTakesSeveralChatsAndTheSessionWaitsForAllOfThem() async throws {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["one"])
        try await fixture.enqueueTexts(count: 30, sessions: ["one"], chatsPerSession: 30)
        let queued = try await fixture.database.query("SELECT id FROM wa_outbox.jobs ORDER BY id").map { try $0.decode(Int64.self, at: 0) }

        let batch = try await claim(fixture)
        #expect(batch.runs.count == 1 && batch.lanes == 10)
        #expect(batch.runs[0].map(\.id) == Array(queued.prefix(10)), "the slot is the ten oldest chats, in order")
        #expect(try await inFlight(fixture, "one") == 10)
        #expect(try await claim(fixture).jobs.isEmpty)

        try await complete(fixture, batch.jobs.prefix(9))
        #expect(try await inFlight(fixture, "one") == 1)
        #expect(try await claim(fixture).jobs.isEmpty, "a new slot started while the last one was still sending")

        try await complete(fixture, batch.jobs.suffix(1))
        #expect(try await claim(fixture).jobs.map(\.id) == Array(queued[10..<20]))
        await fixture.close()
    }

    /// A session of two slots takes one chat per slot (each with its run), as before slots: with
    /// busy chats counted against its cap, a slot of several chats would keep the other slot idle
    /// until nearly all of them were done.
    @Test func aSessionOfSeveralSlotsTakesOneChatPerSlot() async throws {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["two"], maxInFlight: 2)
        try await fixture.enqueueTexts(count: 24, sessions: ["two"], chatsPerSession: 6)
        let batch = try await claim(fixture)
        #expect(batch.jobs.count == 8 && batch.lanes == 2)
        #expect(batch.runs.map(\.count) == [4, 4] && batch.runs.allSatisfy { Set($0.map(\.chat)).count == 1 })
        #expect(try await inFlight(fixture, "two") == 2)
        await fixture.close()
    }

    /// A send that must be retried holds back the rest of its own chat, not the other chats of
    /// its slot: they go on at once, and its retry comes after them (the session is at its cap
    /// until they are done). Before, the whole slot went back with the failed send's backoff, and
    /// the failed chat, first in the slot again, was delivered first.
    @Test func aRetryHoldsBackOnlyItsOwnChatInASlot() async throws {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["one"])
        try await fixture.enqueueTexts(count: 10, sessions: ["one"], chatsPerSession: 10)
        let first = "4915100000000@s.whatsapp.net"
        let log = try TestEnvironment.scratchDirectory("slot-retry").appendingPathComponent("deliveries.jsonl")
        let simulator = try WhatsAppSimulator(deliveryLog: log)
        try await fixture.drain(simulator: simulator, engine: FailsOnce(simulator: simulator, chat: first))
        await simulator.flush()

        let deliveries = try String(contentsOf: log, encoding: .utf8).split(separator: "\n").map { try JSONDecoder().decode(Delivery.self, from: Data($0.utf8)) }
        #expect(checkDeliveries(deliveries, jobs: try await fixture.jobsByMessageID()) == [])
        #expect(deliveries.sorted { $0.time < $1.time }.map(\.chat).last == first, "order of delivery: \(deliveries.map(\.chat))")
        #expect(try await fixture.count("SELECT sum(attempts)::int8 FROM wa_outbox.jobs") == 11)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.events WHERE status = 'retrying'") == 1)
        await fixture.close()
    }

    /// A worker drains a broadcast through slots, 20% of sends failing: every message once, each
    /// failed attempt one `retrying` event (the jobs held back behind it spent none), and never
    /// more sends of a session at once than its cap. Each send takes 5 ms in the simulator, so a session's
    /// deliveries `max_in_flight` apart are at least 5 ms apart unless more were sent at once.
    @Test func aWorkerKeepsEachSessionsCapWhileSendingSlots() async throws {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["a", "b"], maxInFlight: 1)
        try await fixture.addSessions(["c"], maxInFlight: 3)
        try await fixture.enqueueTexts(count: 300, sessions: ["a", "b", "c"], chatsPerSession: 100)
        try await fixture.database.query("UPDATE wa_outbox.jobs SET max_attempts = 30")
        var configuration = SimulatorConfiguration()
        configuration.latency = .milliseconds(5)
        configuration.transientFailureRate = 0.2
        let deliveries = try await fixture.drainLoggingDeliveries(configuration, name: "slots")
        let attempts = try await fixture.count("SELECT sum(attempts)::int8 FROM wa_outbox.jobs")
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.events WHERE status = 'retrying'") == attempts - 300)
        #expect(attempts > 330 && attempts < 500, "20% of attempts fail: \(attempts) attempts")
        for (session, cap) in [("a", 1), ("b", 1), ("c", 3)] {
            let times = deliveries.filter { $0.session == session }.map(\.time).sorted()
            #expect(times.count == 100)
            let closest = zip(times, times.dropFirst(cap)).map { $1 - $0 }.min() ?? 1
            #expect(closest >= 0.0049, "session \(session): \(cap + 1) sends within \(closest * 1000) ms")
        }
        #expect(try await fixture.count("SELECT coalesce(sum(in_flight), 0)::int8 FROM wa_outbox.sessions") == 0)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.lanes WHERE busy") == 0)
        await fixture.close()
    }
}

/// The in-process simulator, except that the first send to `chat` fails as an engine's 503 would.
final class FailsOnce: SessionEngine {
    let simulator: WhatsAppSimulator
    let chat: String
    let failed = Mutex(false)

    init(simulator: WhatsAppSimulator, chat: String) {
        self.simulator = simulator
        self.chat = chat
    }

    func perform(_ operation: WhatsAppOperation, session: String) async throws(DispatchFailure) -> EngineReceipt {
        if operation.chat == chat, failed.withLock({ failed in defer { failed = true }; return !failed }) {
            throw .transient("503 Service Unavailable")
        }
        return try await SimulatorEngine(simulator: simulator).perform(operation, session: session)
    }

    func status(session: String) async throws(DispatchFailure) -> EngineSessionStatus {
        try await SimulatorEngine(simulator: simulator).status(session: session)
    }

    func check(session: String) async -> EngineCheck {
        await SimulatorEngine(simulator: simulator).check(session: session)
    }
}
