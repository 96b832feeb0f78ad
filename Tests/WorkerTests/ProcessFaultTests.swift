import Foundation
import OutboxCore
import PostgresClient
import Testing
import TestSupport

extension OutboxProcess {
    /// The exit status, or nil if the process was still running after `limit` (it is then killed).
    func exitStatus(within limit: Duration) async -> Int32? {
        let deadline = ContinuousClock.now + limit
        while process.isRunning && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        guard !process.isRunning else {
            signal(SIGKILL)
            _ = await exitStatus()
            return nil
        }
        return await exitStatus()
    }
}

/// Worker processes whose parts fail: issue 15's faults that need a real process.
@Suite("Worker process faults", .serialized)
struct ProcessFaultTests {
    /// A worker whose admin port is taken ends at once with an error that names the address and
    /// the option to change; it never runs half-alive.
    @Test func aWorkerWhoseAdminPortIsTakenExitsNamingTheAddressAndTheOption() async throws {
        let fixture = try await Fixture.make()
        let simulator = try await HTTPSimulator.start()
        try await fixture.addSessions(["busy"], engine: "wuzapi", url: simulator.baseURL)
        try await fixture.enqueueTexts(count: 200, sessions: ["busy"], chatsPerSession: 1)
        // The simulator holds this address, as a first worker holds the default one.
        let taken = simulator.baseURL.replacingOccurrences(of: "http://", with: "")
        let worker = try OutboxProcess(["worker", "--database-url", fixture.url, "--admin-listen", taken, "--poll-interval-ms", "200",
                                        "--rate-per-second", "100000", "--burst", "100000", "--pacing", "off"])
        let status = await worker.exitStatus(within: .seconds(20))
        #expect(status != nil, "the worker was still running 20 s later: \(worker.stderr.suffix(1000))")
        #expect(status != 0)
        #expect(worker.stderr.contains(taken) && worker.stderr.contains("--admin-listen"), "\(worker.stderr.suffix(1000))")
        await simulator.stop()
        await fixture.close()
    }

    /// A worker started while PostgreSQL is down (a restart, a failover) waits for it and then
    /// works. It used to exit at once (scripts/chaos replaced 25 such workers), and a service
    /// manager counts that as a crash: systemd gives up on a unit after five in two minutes.
    @Test func aWorkerStartedWhilePostgreSQLIsDownWaitsForItAndWorks() async throws {
        let server = try await PrivateServer.start(.postgres)
        let fixture = try await Fixture.make(url: server.url)
        try await fixture.addSessions(["patient"])
        try await fixture.enqueueTexts(count: 3, sessions: ["patient"], chatsPerSession: 1)
        await fixture.close()
        try await server.stop()
        let worker = try OutboxProcess(["worker", "--database-url", server.url, "--admin-listen", "off", "--no-limits",
                                        "--poll-interval-ms", "200"])
        try await Task.sleep(for: .seconds(3))
        #expect(worker.process.isRunning, "the worker exited while PostgreSQL was down: \(worker.stderr.suffix(1000))")
        try await server.start()
        let database = PostgresDatabase(configuration: PostgresConfiguration(server.url), maxConnections: 1, logger: TestEnvironment.logger)
        var sent = 0
        for _ in 0..<600 where sent < 3 {
            sent = try await database.query("SELECT count(*)::int8 FROM wa_outbox.jobs WHERE state = 'succeeded'")[0].decode(Int.self, at: 0)
            if sent < 3 { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(sent == 3, "\(worker.stderr.suffix(1000))")
        #expect(worker.stderr.contains("cannot register this worker with PostgreSQL yet"))
        await database.close()
        worker.signal(SIGTERM)
        #expect(await worker.exitStatus(within: .seconds(30)) == 0)
        await server.destroy()
    }

    /// After a SIGKILL, the rescue lets the dead worker's dispatch locks go: its job is sent again
    /// within the lease and a few seconds, not once the lock expires (request timeout + 5 s).
    @Test func aKilledWorkersJobIsResentWithinTheLeaseNotTheLockTTL() async throws {
        let fixture = try await Fixture.make()
        let simulator = try await HTTPSimulator.start(["--sim-latency-ms", "2000"])
        try await fixture.addSessions(["k"], engine: "wuzapi", url: simulator.baseURL)
        try await fixture.enqueueTexts(count: 1, sessions: ["k"], chatsPerSession: 1)
        let arguments = ["worker", "--database-url", fixture.url, "--lease-ms", "2000", "--request-timeout-ms", "30000",
                         "--poll-interval-ms", "200", "--rate-per-second", "100000", "--burst", "100000", "--pacing", "off",
                         "--admin-listen", "off"]
        let victim = try OutboxProcess(arguments)
        while try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'running'") < 1 {
            try await Task.sleep(for: .milliseconds(20))
        }
        try await Task.sleep(for: .milliseconds(300))  // its request is at the engine now
        victim.signal(SIGKILL)
        let killedAt = ContinuousClock.now
        _ = await victim.exitStatus()
        let rescuer = try OutboxProcess(arguments + ["--exit-when-idle"])
        let status = await rescuer.exitStatus(within: .seconds(60))
        let took = ContinuousClock.now - killedAt
        #expect(status == 0, "\(rescuer.stderr.suffix(1000))")
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'") == 1)
        print("SIGKILL to the job's success on another worker: \(took)")
        // Lease 2 s, a rescue pass every 0.67 s, the engine's 2 s answer, start-up and slack.
        #expect(took < .seconds(9), "recovery took \(took): the dead worker's lock was waited out")
        #expect(checkDeliveries(try await simulator.deliveries(), jobs: try await fixture.jobsByMessageID()) == [])
        await simulator.stop()
        await fixture.close()
    }
}
