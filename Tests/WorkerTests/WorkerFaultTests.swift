import Coordination
import Foundation
import OutboxCore
import OutboxStore
import PostgresClient
import RedisClient
import Synchronization
import Simulator
import Testing
import TestSupport
@testable import Worker

struct InjectedFault: Error {}

/// Runs `worker` in a task until `done()` holds or `limit` passes (a liveness bound for a loaded
/// machine, never a speed target), then shuts it down and waits
/// for it. Returns whether `done()` held, and the error `run()` threw, if any.
func runUntil(_ worker: Worker, limit: Duration = .seconds(60), _ done: () async throws -> Bool) async throws -> (done: Bool, error: (any Error)?) {
    let running = Task { try await worker.run() }
    let deadline = ContinuousClock.now + limit
    var held = false
    while ContinuousClock.now < deadline {
        if try await done() { held = true; break }
        try await Task.sleep(for: .milliseconds(50))
    }
    worker.shutdown()
    do {
        try await running.value
        return (held, nil)
    } catch {
        return (held, error)
    }
}

/// The promises of one worker process when parts of it fail: issue 15's faults, each with the
/// test that failed before its fix.
@Suite("Worker faults")
struct WorkerFaultTests {
    /// Nothing claimed is ever left without a way back: when the step after the claim fails, the
    /// jobs go back to the queue without spending an attempt, and a session capped at one
    /// dispatch goes on sending.
    @Test func jobsClaimedWhenTheNextStepFailsGoBackToTheQueue() async throws {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["capped"], maxInFlight: 1)
        try await fixture.enqueueTexts(count: 3, sessions: ["capped"], chatsPerSession: 3)
        let failures = Counter(1)
        let worker = fixture.makeWorker(simulator: try WhatsAppSimulator()) {
            $0.afterClaim = { if failures.take() { throw InjectedFault() } }
        }
        let (done, error) = try await runUntil(worker) {
            try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'") == 3
        }
        #expect(error == nil)
        let stuck = try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'running'")
        #expect(done, "jobs stuck: \(stuck) running")
        #expect(try await fixture.count("SELECT sum(attempts)::int8 FROM wa_outbox.jobs") == 3, "the failed claim spent an attempt")
        #expect(try await fixture.count("SELECT in_flight::int8 FROM wa_outbox.sessions") == 0)
        await fixture.close()
    }

    /// A claim whose answer is lost after its commit (the connection breaking as the answer comes)
    /// is found by its token once its backend has ended, and what it took goes back to the queue
    /// before the worker claims again: nothing stays running under the worker's live lease, no
    /// attempt is spent, nothing is sent twice.
    @Test func aClaimWhoseAnswerIsLostGoesBackByItsToken() async throws {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["l1", "l2"], maxInFlight: 1)
        try await fixture.enqueueTexts(count: 6, sessions: ["l1", "l2"], chatsPerSession: 3)
        let losses = Counter(1)
        let simulator = try WhatsAppSimulator()
        let worker = fixture.makeWorker(simulator: simulator) { $0.loseClaimAnswer = { losses.take() } }
        let (done, error) = try await runUntil(worker) {
            try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'") == 6
        }
        #expect(error == nil)
        let stuck = try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'running'")
        #expect(done, "jobs stuck: \(stuck) running")
        #expect(!losses.take(), "no answer was lost")
        #expect(try await fixture.count("SELECT sum(attempts)::int8 FROM wa_outbox.jobs") == 6, "the lost claim spent an attempt")
        #expect(try await fixture.count("SELECT sum(in_flight)::int8 FROM wa_outbox.sessions") == 0)
        #expect(simulator.stats.delivered == 6 && simulator.stats.deliveredTwice == 0)
        await fixture.close()
    }

    /// A claim whose `COMMIT` fails after its rows arrived (here a deferred check) is rolled back
    /// whole: the jobs it returned are handed back (fenced, so nothing is undone twice), no
    /// attempt is spent, and the worker goes on claiming.
    @Test func aClaimWhoseCommitFailsLeavesItsJobsQueued() async throws {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["c"], maxInFlight: 1)
        try await fixture.enqueueTexts(count: 3, sessions: ["c"], chatsPerSession: 3)
        // A deferred check that fails the first two commits that claimed a job (a sequence, so
        // the count survives the rollbacks it causes).
        try await fixture.database.withConnection { try await $0.execute("""
            CREATE SEQUENCE public.claims_seen;
            CREATE FUNCTION public.fail_commit() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.state = 'running' THEN
                    IF nextval('public.claims_seen') <= 2 THEN
                        RAISE EXCEPTION 'injected commit failure';
                    END IF;
                END IF;
                RETURN NULL;
            END $$;
            CREATE CONSTRAINT TRIGGER fail_commit AFTER UPDATE ON wa_outbox.jobs
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.fail_commit();
            """) }
        let worker = fixture.makeWorker(simulator: try WhatsAppSimulator())
        let (done, error) = try await runUntil(worker) {
            try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'") == 3
        }
        #expect(error == nil)
        let left = try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state <> 'succeeded'")
        #expect(done, "jobs stuck: \(left) not sent")
        #expect(try await fixture.count("SELECT last_value FROM public.claims_seen") > 2, "no commit failed")
        #expect(try await fixture.count("SELECT sum(attempts)::int8 FROM wa_outbox.jobs") == 3, "a failed commit spent an attempt")
        #expect(try await fixture.count("SELECT in_flight::int8 FROM wa_outbox.sessions") == 0)
        await fixture.close()
    }

    /// `--exit-when-idle` writes every completion and returns normally even when its check for
    /// pending work fails.
    @Test func exitWhenIdleFinishesCleanlyWhenThePendingCheckFails() async throws {
        let fixture = try await Fixture.make()
        let sessions = (0..<4).map { "p\($0)" }
        try await fixture.addSessions(sessions)
        try await fixture.enqueueTexts(count: 40, sessions: sessions, chatsPerSession: 2)
        let failures = Counter(1)
        let worker = fixture.makeWorker(simulator: try WhatsAppSimulator()) {
            $0.exitWhenIdle = true
            $0.beforePendingCheck = { if failures.take() { throw InjectedFault() } }
        }
        await #expect(throws: Never.self) { try await worker.run() }
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'") == 40)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.workers") == 0)
        await fixture.close()
    }

    /// Once an engine has answered, its result is written: completions that could not be written
    /// when shutdown began are kept and written once the database is back, within the grace period.
    @Test func completionsPendingAtShutdownAreWrittenOnceTheDatabaseIsBack() async throws {
        let server = try await PrivateServer.start(.postgres)
        let fixture = try await Fixture.make(url: server.url)
        let sessions = (0..<20).map { "d\($0)" }
        try await fixture.addSessions(sessions)
        try await fixture.enqueueTexts(count: 20, sessions: sessions, chatsPerSession: 1)
        var simulation = SimulatorConfiguration()
        simulation.latency = .milliseconds(1_500)
        let simulator = try WhatsAppSimulator(configuration: simulation)
        let worker = fixture.makeWorker(simulator: simulator) { $0.gracePeriod = .seconds(20) }
        let began = ContinuousClock.now
        let running = Task { try await worker.run() }
        while try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'running'") < 20 {
            try await Task.sleep(for: .milliseconds(20))
        }
        try await server.stop()
        // The engine answers while the database is down; the worker cannot write the results.
        while simulator.stats.delivered < 20 { try await Task.sleep(for: .milliseconds(20)) }
        try await Task.sleep(for: .milliseconds(500))
        worker.shutdown()
        try await Task.sleep(for: .seconds(1))
        try await server.start()
        print("database back \(ContinuousClock.now - began) after start")
        _ = try? await running.value
        print("worker returned \(ContinuousClock.now - began) after start")
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'") == 20)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'running'") == 0)
        await fixture.close()
        await server.destroy()
    }

    /// A worker renews its lease however busy its other database work is: with every pooled
    /// connection held by slow statements, its lease never lapses and no job is rescued.
    @Test func theLeaseIsRenewedWhileThePoolIsSaturated() async throws {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["h"], maxInFlight: 4)
        try await fixture.enqueueTexts(count: 4, sessions: ["h"], chatsPerSession: 4)
        var simulation = SimulatorConfiguration()
        simulation.latency = .seconds(15)
        // A lease of 10 s (a heartbeat every 3.3 s) leaves a loaded test machine room to be late:
        // with 1.5 s, and once with 6 s, the whole suite running beside it (and a build) delayed a
        // heartbeat past the lease.
        let worker = fixture.makeWorker(simulator: try WhatsAppSimulator(configuration: simulation)) { $0.lease = .seconds(10) }
        let running = Task { try await worker.run() }
        let observer = try await PostgresConnection.connect(PostgresConfiguration(fixture.url), logger: TestEnvironment.logger)
        func count(_ sql: String) async throws -> Int { try await observer.query(PostgresQuery(sql))[0].decode(Int.self, at: 0) }
        while try await count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'running'") < 4 {
            try await Task.sleep(for: .milliseconds(20))
        }
        // Every connection of the worker's pool is taken for 20 s, twice the lease (the pool holds 8).
        let hogs = Task {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<8 { group.addTask { try await fixture.database.query("SELECT pg_sleep(20)") } }
                try await group.waitForAll()
            }
        }
        var lapsed = 0
        let until = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < until {
            lapsed += try await count("SELECT count(*) FROM wa_outbox.workers WHERE lease_expires_at < now()")
            try await Task.sleep(for: .milliseconds(100))
        }
        try await hogs.value
        #expect(lapsed == 0, "the lease lapsed while the pool was busy")
        #expect(try await count("SELECT count(*) FROM wa_outbox.events WHERE error_code = 'worker_lost'") == 0)
        worker.shutdown()
        _ = try? await running.value
        await observer.close()
        await fixture.close()
    }

    /// Pacing holds between actual engine calls: with more sessions than connections to the engine
    /// server, a dispatch that waits for a connection has not yet used its session's pacing gap.
    @Test func pacingHoldsBetweenEngineCallsWhenDispatchesQueueForTheServer() async throws {
        let fixture = try await Fixture.make()
        let simulator = try await HTTPSimulator.start(["--sim-latency-ms", "60"])
        let sessions = (0..<64).map { "g\($0)" }
        try await fixture.addSessions(sessions, engine: "wuzapi", url: simulator.baseURL, maxInFlight: 4)
        try await fixture.enqueueTexts(count: 64 * 5, sessions: sessions, chatsPerSession: 4)
        let limits = SessionLimits(ratePerSecond: 1_000, burst: 1_000, pacing: true, minGapMilliseconds: 100, maxGapMilliseconds: 100)
        let redis = RedisDatabase(configuration: try RedisConfiguration(url: TestEnvironment.redisURL()), maxConnections: 4, logger: TestEnvironment.logger)
        let coordinator = Coordinator(redis: redis, prefix: "pace-\(UUID().uuidString.prefix(8))", logger: TestEnvironment.logger)
        try await fixture.drain(simulator: try WhatsAppSimulator(), coordinator: coordinator, limits: limits) { $0.concurrency = 512 }
        let deliveries = try await simulator.deliveries()
        #expect(deliveries.count == 64 * 5)
        var shortest = Double.infinity
        for session in sessions {
            let times = deliveries.filter { $0.session == session }.map(\.time).sorted()
            for (earlier, later) in zip(times, times.dropFirst()) { shortest = min(shortest, later - earlier) }
        }
        print("pacing behind the engine gate: shortest gap \(Int(shortest * 1000)) ms")
        #expect(shortest >= 0.1, "two sends of one session reached the engine \(Int(shortest * 1000)) ms apart")
        await simulator.stop()
        await fixture.close()
    }
}

/// Counts down from `n`: `take()` is true `n` times.
final class Counter: Sendable {
    private let remaining: Mutex<Int>
    init(_ n: Int) { remaining = Mutex(n) }
    func take() -> Bool {
        remaining.withLock { value in
            guard value > 0 else { return false }
            value -= 1
            return true
        }
    }
}
