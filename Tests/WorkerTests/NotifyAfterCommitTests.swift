import Foundation
import OutboxCore
import OutboxStore
import PostgresClient
import Synchronization
import TestSupport
import Testing

/// The busiest writers commit without NOTIFY and wake listeners afterwards (migration 0016); every
/// other writer still notifies from the triggers. Quiet spells below are 300 ms: a notification
/// arrives within milliseconds, so one that does not come in that time was not sent.
@Suite("NOTIFY after commit")
struct NotifyAfterCommitTests {
    /// Notifications on both channels, counted per channel.
    final class Heard: Sendable {
        let listener: PostgresListener
        private let counts = Mutex<[String: Int]>([:])
        private let task = Mutex<Task<Void, Never>?>(nil)

        init(url: String) async throws {
            listener = PostgresListener(configuration: PostgresConfiguration(url), channels: [WakeupNotifier.jobs, WakeupNotifier.events],
                                        logger: TestEnvironment.logger)
            let subscribed = AsyncStream.makeStream(of: Void.self)
            let events = listener.events()
            task.withLock {
                $0 = Task {
                    for await event in events {
                        switch event {
                        case .subscribed: subscribed.continuation.yield()
                        case .notification(let note): self.counts.withLock { $0[note.channel, default: 0] += 1 }
                        }
                    }
                }
            }
            for await _ in subscribed.stream { break }
        }

        func count(_ channel: String) -> Int { counts.withLock { $0[channel] ?? 0 } }

        /// Waits until `channel` has been heard `count` times, for at most 10 s.
        func waitFor(_ channel: String, _ count: Int) async throws {
            let deadline = ContinuousClock.now + .seconds(10)
            while self.count(channel) < count, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        }

        func stop() {
            listener.stop()
            task.withLock { $0?.cancel() }
        }
    }

    static func text(_ n: Int) -> String { #"{"type":"text","chat":"4915550000\#(n)@s.whatsapp.net","text":"hi"}"# }

    @Test func anEnqueueWithANotifierCommitsSilentlyAndTheNotifierWakesAfterwards() async throws {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["s"])
        let heard = try await Heard(url: fixture.url)
        defer { heard.stop() }

        // The plain function notifies from its triggers, inside its own transaction.
        _ = try await Outbox.enqueue(EnqueueRequest(org: "org1", session: "s", kind: .send, payload: Self.text(1)), in: fixture.database)
        try await heard.waitFor(WakeupNotifier.jobs, 1)
        try await heard.waitFor(WakeupNotifier.events, 1)
        #expect(heard.count(WakeupNotifier.jobs) == 1 && heard.count(WakeupNotifier.events) == 1)

        // The silent one sends nothing by itself...
        try await fixture.database.query("""
            SELECT * FROM wa_outbox.enqueue_notify_after_commit('org1', 's', 'send', \(PostgresJSONB(Self.text(2))))
            """)
        try await Task.sleep(for: .milliseconds(300))
        #expect(heard.count(WakeupNotifier.jobs) == 1 && heard.count(WakeupNotifier.events) == 1, "the silent enqueue notified")

        // ...and with a notifier, both channels are woken once it has committed.
        let notifier = WakeupNotifier(database: fixture.database, channels: [WakeupNotifier.jobs, WakeupNotifier.events], logger: TestEnvironment.logger)
        let queued = try await Outbox.enqueue(EnqueueRequest(org: "org1", session: "s", kind: .send, payload: Self.text(3)), in: fixture.database,
                                              notifier: notifier)
        try await heard.waitFor(WakeupNotifier.jobs, 2)
        try await heard.waitFor(WakeupNotifier.events, 2)
        #expect(heard.count(WakeupNotifier.jobs) == 2 && heard.count(WakeupNotifier.events) == 2)
        #expect(queued.status == "queued" && !queued.replayed)

        // The setting ends with the transaction: the next plain enqueue on any connection notifies.
        _ = try await Outbox.enqueue(EnqueueRequest(org: "org1", session: "s", kind: .send, payload: Self.text(4)), in: fixture.database)
        try await heard.waitFor(WakeupNotifier.jobs, 3)
        #expect(heard.count(WakeupNotifier.jobs) == 3)
        #expect(try await fixture.database.query("SELECT count(*) FROM wa_outbox.jobs")[0].decode(Int.self, at: 0) == 4)
        await fixture.close()
    }

    @Test func theSilentCompletionWritesTheSameRowsAndSendsNoNotify() async throws {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["s"], maxInFlight: 2)
        try await fixture.enqueueTexts(count: 2, sessions: ["s"], chatsPerSession: 2)
        let worker = UUID()
        let claimed = try await fixture.database.withConnection { try await ClaimQuery.claim(workerID: worker, limit: 2, on: $0) }.jobs
        #expect(claimed.count == 2)
        let heard = try await Heard(url: fixture.url)
        defer { heard.stop() }

        let done = try await fixture.database.withConnection {
            try await CompletionQuery.complete(claimed.map { Completion(jobID: $0.id, claim: $0.claim, workerID: worker, outcome: .succeeded) },
                                               on: $0, notifyingAfterCommit: true)
        }
        #expect(done == Set(claimed.map(\.id)))
        try await Task.sleep(for: .milliseconds(300))
        #expect(heard.count(WakeupNotifier.events) == 0, "the silent completion notified")
        let sent = try await fixture.database.query("SELECT count(*) FROM wa_outbox.events WHERE status = 'sent'")[0].decode(Int.self, at: 0)
        #expect(sent == 2)
        await fixture.close()
    }

    @Test func signalsDuringANotifyShareTheNextOneAndTheLastSignalIsAlwaysFollowedByOne() async throws {
        let fixture = try await Fixture.make()
        let heard = try await Heard(url: fixture.url)
        defer { heard.stop() }
        let notifier = WakeupNotifier(database: fixture.database, channels: [WakeupNotifier.events], logger: TestEnvironment.logger)
        for _ in 0..<200 { notifier.signal() }
        try await heard.waitFor(WakeupNotifier.events, 1)
        try await Task.sleep(for: .milliseconds(300))
        let afterBurst = heard.count(WakeupNotifier.events)
        #expect((1...2).contains(afterBurst), "200 signals at once share at most two NOTIFYs; heard \(afterBurst)")
        #expect(heard.count(WakeupNotifier.jobs) == 0)
        notifier.signal()
        try await heard.waitFor(WakeupNotifier.events, afterBurst + 1)
        #expect(heard.count(WakeupNotifier.events) == afterBurst + 1)
        await fixture.close()
    }
}
