import Foundation
import OutboxCore
import PostgresClient
import Simulator
import Testing
import TestSupport

/// Many worker processes against one database and the HTTP simulator, as in production.
@Suite("Worker processes against the HTTP simulator", .serialized)
struct MultiProcessTests {
    static let sessions = (0..<50).map { "s\($0)" }
    /// Limits high enough never to bind, so these runs measure the outbox itself (Redis is still used).
    static let unlimited = ["--rate-per-second", "100000", "--burst", "100000", "--pacing", "off", "--admin-listen", "off"]

    func workerArguments(_ fixture: Fixture, _ extra: [String] = []) -> [String] {
        ["worker", "--database-url", fixture.url, "--exit-when-idle", "--poll-interval-ms", "200", "--request-timeout-ms", "5000"]
            + Self.unlimited + extra
    }

    /// Every job of the run has exactly one final event, and every job succeeded.
    func expectAllSucceededOnce(_ fixture: Fixture, jobs: Int) async throws {
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'") == jobs)
        #expect(try await fixture.count("""
            SELECT count(*) FROM (SELECT job_id FROM wa_outbox.events WHERE status IN ('sent', 'edited', 'revoked', 'failed', 'canceled')
                                  GROUP BY job_id HAVING count(*) = 1) once
            """) == jobs)
        #expect(try await fixture.count("SELECT coalesce(sum(in_flight), 0)::int8 FROM wa_outbox.sessions") == 0)
        #expect(try await fixture.count("SELECT coalesce(sum(pending), 0)::int8 FROM wa_outbox.lanes") == 0)
    }

    @Test func twentyThousandSendsOverThreeWorkersArriveOnceAndInOrder() async throws {
        let fixture = try await Fixture.make()
        let simulator = try await HTTPSimulator.start()
        try await fixture.addSessions(Self.sessions, engine: "wuzapi", url: simulator.baseURL)
        try await fixture.enqueueTexts(count: 20_000, sessions: Self.sessions, chatsPerSession: 10)
        let workers = try (0..<3).map { _ in try OutboxProcess(workerArguments(fixture)) }
        for worker in workers {
            let status = await worker.exitStatus()
            #expect(status == 0, "worker exited \(status): \(worker.stderr.suffix(2000))")
        }
        try await expectAllSucceededOnce(fixture, jobs: 20_000)
        let deliveries = try await simulator.deliveries()
        #expect(deliveries.count == 20_000)
        #expect(checkDeliveries(deliveries, jobs: try await fixture.jobsByMessageID()) == [])
        await simulator.stop()
        await fixture.close()
    }

    /// Foundation notices a child's exit only once every holder of its monitoring socket closes
    /// it, so a daemon the child started with that descriptor inherited keeps `isRunning` true
    /// while the child is a zombie: a test run hung 13 minutes on such a `servers.sh`. The wait
    /// reaps the zombie itself (after a second) instead of waiting for the daemon to end.
    @Test func aChildWhoseDaemonOutlivesItIsStillSeenToExit() async throws {
        let started = Date()
        let result = try await Subprocess.run(URL(fileURLWithPath: "/bin/bash"), ["-c", "sleep 60 & echo $!; exit 3"])
        #expect(result.status == 3)
        #expect(Date().timeIntervalSince(started) < 30, "the wait lasted as long as the daemon")
        if let daemon = Int32(result.output.trimmingCharacters(in: .whitespacesAndNewlines)) { kill(daemon, SIGKILL) }
    }

    /// Without Redis nothing limits how fast a session sends: the worker refuses to start rather
    /// than send unthrottled, and says what to do, unless told `--no-limits`.
    @Test func aWorkerWithoutRedisRefusesToStartUnlessToldNoLimits() async throws {
        let fixture = try await Fixture.make()
        let arguments = ["worker", "--database-url", fixture.url, "--exit-when-idle", "--admin-listen", "off"]
        let refused = try OutboxProcess(arguments, environment: ["REDIS_URL": ""])
        #expect(await refused.exitStatus() != 0)
        #expect(refused.stderr.contains("REDIS_URL is not set"), "\(refused.stderr.suffix(500))")
        let allowed = try OutboxProcess(arguments + ["--no-limits"], environment: ["REDIS_URL": ""])
        #expect(await allowed.exitStatus() == 0, "\(allowed.stderr.suffix(500))")
        await fixture.close()
    }

    @Test func aWorkerKilledMidRunLosesNothingAndSendsNothingTwice() async throws {
        let fixture = try await Fixture.make()
        let simulator = try await HTTPSimulator.start()
        try await fixture.addSessions(Self.sessions, engine: "wuzapi", url: simulator.baseURL)
        try await fixture.enqueueTexts(count: 20_000, sessions: Self.sessions, chatsPerSession: 10)
        let lease = 2_000
        let workers = try (0..<3).map { _ in try OutboxProcess(workerArguments(fixture, ["--lease-ms", "\(lease)"])) }
        while try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'") < 4_000 {
            try await Task.sleep(for: .milliseconds(50))
        }
        // Kill the first worker while it holds jobs of its own (found through its pid). A worker can finish
        // its batch between a query and a signal, so freeze it first (SIGSTOP), count its running jobs while
        // it cannot change them, and kill it only when there are some; otherwise let it run a moment and retry.
        let victimPID = Int(workers[0].process.processIdentifier)
        let victimRunning = """
            SELECT count(*) FROM wa_outbox.jobs j JOIN wa_outbox.workers w ON w.id = j.worker_id
            WHERE j.state = 'running' AND w.pid = \(victimPID)
            """
        var victimJobs = 0
        var killedAt = Date()
        var tries = 0
        while victimJobs == 0 {
            tries += 1
            try #require(tries < 1_000, "the first worker never held a running job")
            workers[0].signal(SIGSTOP)
            killedAt = Date()
            // A statement it sent just before it stopped may still commit: count again once that has settled.
            if try await fixture.count(victimRunning) > 0 {
                try await Task.sleep(for: .milliseconds(200))
                victimJobs = try await fixture.count(victimRunning)
            }
            if victimJobs == 0 {
                workers[0].signal(SIGCONT)
                try await Task.sleep(for: .milliseconds(5))
            }
        }
        workers[0].signal(SIGKILL)
        #expect(await workers[0].exitStatus() != 0)
        for worker in workers.dropFirst() {
            let status = await worker.exitStatus()
            #expect(status == 0, "worker exited \(status): \(worker.stderr.suffix(2000))")
        }
        try await expectAllSucceededOnce(fixture, jobs: 20_000)
        let deliveries = try await simulator.deliveries()
        #expect(checkDeliveries(deliveries, jobs: try await fixture.jobsByMessageID()) == [])

        // The dead worker's jobs were handed over within lease + rescue interval + poll (+ slack).
        let rescued = try await fixture.database.query("""
            SELECT count(*), coalesce(max(extract(epoch FROM created_at)), 0)::float8
            FROM wa_outbox.events WHERE error_code = 'worker_lost'
            """)
        let rescuedCount = try rescued[0].decode(Int.self, at: 0)
        let lastRescue = Date(timeIntervalSince1970: try rescued[0].decode(Double.self, at: 1))
        #expect(victimJobs > 0)
        #expect(rescuedCount > 0, "no job of the killed worker was rescued")
        let bound = Double(lease) / 1000 + Double(lease) / 3000 + 0.2 + 2.0
        #expect(lastRescue.timeIntervalSince(killedAt) < bound, "rescue took \(lastRescue.timeIntervalSince(killedAt)) s")
        print("SIGKILL: \(rescuedCount) jobs rescued, last \(String(format: "%.2f", lastRescue.timeIntervalSince(killedAt))) s after the kill; simulator suppressed \(try await simulator.stats().suppressedDuplicates) resends")
        await simulator.stop()
        await fixture.close()
    }

    @Test func sigtermDrainsWithinTheGracePeriodAndLeavesNothingRunning() async throws {
        let fixture = try await Fixture.make()
        let simulator = try await HTTPSimulator.start(["--sim-latency-ms", "20"])
        try await fixture.addSessions(Self.sessions, engine: "wuzapi", url: simulator.baseURL)
        try await fixture.enqueueTexts(count: 5_000, sessions: Self.sessions, chatsPerSession: 10)
        let worker = try OutboxProcess(["worker", "--database-url", fixture.url, "--grace-ms", "5000", "--poll-interval-ms", "200"] + Self.unlimited)
        while try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'") < 500 {
            try await Task.sleep(for: .milliseconds(20))
        }
        worker.signal(SIGTERM)
        let signaledAt = ContinuousClock.now
        let status = await worker.exitStatus()
        let took = ContinuousClock.now - signaledAt
        #expect(status == 0, "worker exited \(status): \(worker.stderr.suffix(2000))")
        #expect(took < .seconds(7), "shutdown took \(took)")
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'running'") == 0)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.workers") == 0)
        #expect(try await fixture.count("SELECT coalesce(sum(in_flight), 0)::int8 FROM wa_outbox.sessions") == 0)

        // A second worker finishes the rest: still each message once.
        let rest = try OutboxProcess(workerArguments(fixture))
        #expect(await rest.exitStatus() == 0)
        try await expectAllSucceededOnce(fixture, jobs: 5_000)
        #expect(checkDeliveries(try await simulator.deliveries(), jobs: try await fixture.jobsByMessageID()) == [])
        await simulator.stop()
        await fixture.close()
    }
}
