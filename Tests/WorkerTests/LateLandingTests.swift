import Engines
import Foundation
import JobDispatch
import OutboxCore
import PostgresClient
import Simulator
import Testing
import TestSupport
@testable import Worker

/// A request the worker gave up on can still reach the engine: the network holds it, the engine
/// is slow to store it, or the process that sent it was paused and resumed (scripts/chaos found
/// all three). WAHA picks its own message ids, so a second send is a second message, and the look
/// for the first one (reconciliation) finds nothing until it has landed. The look used to come
/// right after the timeout's backoff, and the re-send after it delivered the message twice.
@Suite("A request given up on, landing late")
struct LateLandingTests {
    @Test func aTimedOutWAHASendIsLookedForOnlyOnceItsRequestWouldHaveLanded() async throws {
        let fixture = try await Fixture.make()
        // Every send is stored by the engine 2.5 s after it arrives, after the client's 1 s timeout,
        // and answered 10 s after that: the answer never beats the timeout, however late a loaded
        // machine runs the client's timer (CI once ran it after the 2.5 s answer had come).
        let simulator = try await HTTPSimulator.start(["--dialect", "waha", "--sim-latency-ms", "2500",
                                                       "--sim-ambiguous-rate", "1", "--sim-ambiguous-delay-ms", "10000"])
        try await fixture.addSessions(["late"], engine: "waha", url: simulator.baseURL)
        try await fixture.enqueueTexts(count: 1, sessions: ["late"], chatsPerSession: 1)

        var configuration = WorkerConfiguration(name: "late-landing")
        configuration.pollInterval = .milliseconds(50)
        configuration.retry = RetryPolicy(base: .milliseconds(10), cap: .milliseconds(50), sessionRecheck: .milliseconds(50))
        configuration.requestTimeout = .seconds(1)
        let engines = EngineDirectory(database: fixture.database, engines: EngineDirectory.httpEngines(requestTimeout: configuration.requestTimeout))
        let worker = Worker(configuration: configuration, database: fixture.database, listenerConfiguration: PostgresConfiguration(fixture.url),
                            engines: engines, coordinator: nil, logger: TestEnvironment.logger)
        let running = Task { try await worker.run() }
        let started = ContinuousClock.now
        for _ in 0..<1_200 where try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state IN ('succeeded', 'failed')") < 1 {
            try await Task.sleep(for: .milliseconds(50))
        }
        let took = ContinuousClock.now - started
        worker.shutdown()
        try await running.value

        // Any send still held at the engine lands within its 2.5 s.
        try await Task.sleep(for: .seconds(3))
        let stats = try await simulator.stats()
        #expect(stats.delivered == 1, "the engine stored \(stats.delivered) copies of one send")
        #expect(stats.deliveredTwice == 0)
        let job = try await fixture.database.query("""
            SELECT state, maybe_sent, maybe_sent_at IS NOT NULL, engine_message_id IS NOT NULL FROM wa_outbox.jobs
            """)[0]
        #expect(try job.decode(String.self, at: 0) == "succeeded")
        #expect(try job.decode(Bool.self, at: 1) && job.decode(Bool.self, at: 2), "the timeout left the job marked maybe sent, with its time")
        #expect(try job.decode(Bool.self, at: 3), "the job adopted the message the engine had")
        // The look came after the landing bound (1 s timeout + 5 s), counted from the timeout.
        #expect(took >= .seconds(6), "succeeded after \(took)")
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.events WHERE kind = 'send' AND status = 'sent'") == 1)
        await simulator.stop()
        await fixture.close()
    }
}
