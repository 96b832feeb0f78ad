import Engines
import Foundation
import JobDispatch
import OutboxCore
import PostgresClient
import Simulator
import Synchronization
import Testing
import TestSupport
@testable import Worker

/// A WAHA send that may have arrived is looked for before it is sent again (reconciliation), and
/// that look is an engine call that can take long: a slow engine, or the worker paused (SIGSTOP,
/// scripts/chaos fault `sigstop`) in the middle of it. If the worker's lease lapses meanwhile,
/// its job may already be another worker's, and WAHA, which picks its own ids, would take a second
/// send as a second message. The lease was checked only before the reconciliation, so the send
/// after it went out regardless.
@Suite("Lease lapsing during a reconciliation")
struct LeaseDuringReconcileTests {
    @Test func aWorkerWhoseLeaseLapsedWhileItReconciledDoesNotSend() async throws {
        let fixture = try await Fixture.make()
        let simulator = try await HTTPSimulator.start(["--dialect", "waha"])
        try await fixture.addSessions(["r"], engine: "waha", url: simulator.baseURL)
        try await fixture.enqueueTexts(count: 1, sessions: ["r"], chatsPerSession: 1)
        // An earlier attempt timed out: the next one reconciles first.
        try await fixture.database.query("UPDATE wa_outbox.jobs SET maybe_sent = true")

        let gate = ReconcileGate()
        let held = HeldReconcile(inner: WahaEngine(baseURL: simulator.baseURL, apiKey: "r"), gate: gate)
        var engines = EngineDirectory.httpEngines(requestTimeout: .seconds(30))
        engines["waha"] = { _, _ in held }
        var configuration = WorkerConfiguration(name: "reconciling")
        configuration.pollInterval = .milliseconds(50)
        configuration.retry = RetryPolicy(base: .milliseconds(10), cap: .milliseconds(50), sessionRecheck: .milliseconds(50))
        let lease = Duration.milliseconds(1_500)
        configuration.lease = lease
        let worker = Worker(configuration: configuration, database: fixture.database, listenerConfiguration: PostgresConfiguration(fixture.url),
                            engines: EngineDirectory(database: fixture.database, engines: engines), coordinator: nil, logger: TestEnvironment.logger)
        let running = Task { try await worker.run() }

        for _ in 0..<600 where !gate.started.load(ordering: .relaxed) { try await Task.sleep(for: .milliseconds(20)) }
        let reconciling = gate.started.load(ordering: .relaxed)
        try #require(reconciling, "the worker never reconciled")
        // Heartbeats wait behind this lock: by the worker's own clock its lease runs out.
        let blocker = try await fixture.openTransaction("LOCK TABLE wa_outbox.workers IN EXCLUSIVE MODE")
        try await Task.sleep(for: lease + .milliseconds(500))
        gate.release()
        // The reconciliation found nothing; what follows must not be a send.
        try await Task.sleep(for: .seconds(1))
        let whileLapsed = try await simulator.stats().delivered
        try await blocker.execute("COMMIT")
        await blocker.close()
        for _ in 0..<600 where try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'") < 1 {
            try await Task.sleep(for: .milliseconds(50))
        }
        worker.shutdown()
        try await running.value

        #expect(whileLapsed == 0, "the worker sent after its lease had lapsed, when the job could be another worker's")
        let stats = try await simulator.stats()
        #expect(stats.delivered == 1)
        #expect(stats.deliveredTwice == 0)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'") == 1)
        await simulator.stop()
        await fixture.close()
    }
}

/// Holds the first reconciliation until the test releases it.
final class ReconcileGate: Sendable {
    let started = Atomic<Bool>(false)
    private let released = Atomic<Bool>(false)

    func release() { released.store(true, ordering: .relaxed) }

    func wait() async {
        started.store(true, ordering: .relaxed)
        while !released.load(ordering: .relaxed) {
            try? await Task.sleep(for: .milliseconds(10))
        }
    }
}

/// An engine whose reconciliation waits at a gate; everything else is the wrapped engine's.
struct HeldReconcile: SessionEngine {
    let inner: any SessionEngine
    let gate: ReconcileGate

    var host: String? { inner.host }

    var choosesMessageIDs: Bool { inner.choosesMessageIDs }

    func perform(_ operation: WhatsAppOperation, session: String) async throws(DispatchFailure) -> EngineReceipt {
        try await inner.perform(operation, session: session)
    }

    func status(session: String) async throws(DispatchFailure) -> EngineSessionStatus {
        try await inner.status(session: session)
    }

    func reconcile(_ operation: WhatsAppOperation, session: String, since: Date) async throws(DispatchFailure) -> [EngineReceipt] {
        await gate.wait()
        return try await inner.reconcile(operation, session: session, since: since)
    }

    func check(session: String) async -> EngineCheck {
        await inner.check(session: session)
    }
}
