import Foundation
import OutboxStore
import PostgresClient
import Simulator
import TestSupport
import Testing

/// The gateway as it runs in production, in real processes on a database of the test's own:
/// `wa-outbox api` processes, `wa-outbox worker` processes and the HTTP simulator (wuzapi's dialect).
///
/// Every process shares one Redis key prefix of the test's own, so rate limits and idempotency
/// locks are shared between its processes and never with another test's.
struct LiveGateway {
    let url: String
    let database: PostgresDatabase
    let simulator: HTTPSimulator
    let apis: [OutboxProcess]
    /// The API processes' ports, in the order of `apis`.
    let ports: [Int]
    let workers: [OutboxProcess]

    /// Limits high enough never to bind: these runs test the API and the stream, not the pacing.
    static let unlimited = ["--rate-per-second", "100000", "--burst", "100000", "--pacing", "off"]

    /// Runs `body` on a live gateway (`start`), and stops its processes whether `body` throws or not:
    /// a process left behind would outlive the test run, retrying a database that is gone.
    ///
    /// `logins`: the worker and the API connect as these users (`RoleLogin`) instead of the owner.
    static func run(apis: Int, workers: Int, sessions: [(org: String, id: String)], apiArguments: [String] = [],
                    apiEnvironment: [String: String] = [:], logins: (worker: RoleLogin, api: RoleLogin)? = nil,
                    _ body: (LiveGateway) async throws -> Void) async throws {
        let gateway = try await start(apis: apis, workers: workers, sessions: sessions, apiArguments: apiArguments, apiEnvironment: apiEnvironment,
                                      logins: logins)
        do {
            try await body(gateway)
        } catch {
            await gateway.stop()
            throw error
        }
        await gateway.stop()
    }

    /// Starts the simulator, `workers` workers and `apis` API processes, each API answering
    /// `/healthz` before this returns. `sessions` are registered (organization, id) before the
    /// processes start.
    private static func start(apis apiCount: Int, workers workerCount: Int, sessions: [(org: String, id: String)],
                              apiArguments: [String] = [], apiEnvironment: [String: String] = [:],
                              logins: (worker: RoleLogin, api: RoleLogin)? = nil) async throws -> LiveGateway {
        let url = try await TestEnvironment.freshStreamDatabase(prefix: "live")
        let database = PostgresDatabase(configuration: PostgresConfiguration(url), maxConnections: 4, logger: TestEnvironment.logger)
        try await Migrator(migrations: try Migration.load(directory: TestEnvironment.migrationsDirectory), logger: TestEnvironment.logger).migrate(database)
        let simulator = try await HTTPSimulator.start()
        for session in sessions {
            var record = SessionRecord(id: session.id, org: session.org, engine: "wuzapi", engineURL: simulator.baseURL, maxInFlight: 4)
            record.ratePerSecond = 100_000
            record.burst = 100_000
            record.pacing = false
            try await SessionRegistry.upsert(record, in: database)
        }
        let prefix = ["--redis-prefix", "live-\(UUID().uuidString.prefix(8))"]
        let workers = try (0..<workerCount).map { _ in
            try OutboxProcess(["worker", "--database-url", logins?.worker.url(url) ?? url, "--poll-interval-ms", "200", "--admin-listen", "off"] + unlimited + prefix)
        }
        var apis: [OutboxProcess] = []
        var ports: [Int] = []
        for _ in 0..<apiCount {
            let port = try await TestEnvironment.freePort()
            apis.append(try OutboxProcess(["api", "--database-url", logins?.api.url(url) ?? url, "--listen", "127.0.0.1:\(port)", "--metrics-listen", "off"]
                                          + unlimited + prefix + apiArguments, environment: apiEnvironment))
            ports.append(port)
        }
        let gateway = LiveGateway(url: url, database: database, simulator: simulator, apis: apis, ports: ports, workers: workers)
        do {
            for (api, port) in zip(apis, ports) { try await gateway.waitUntilServing(api, port: port) }
        } catch {
            await gateway.stop()
            throw error
        }
        return gateway
    }

    /// Waits (a liveness bound, not a timing) until an API process answers `/healthz`.
    private func waitUntilServing(_ api: OutboxProcess, port: Int) async throws {
        let deadline = ContinuousClock.now + .seconds(120)
        while ContinuousClock.now < deadline {
            if let answer = try? await request(port: port, "/healthz"), answer.status == 200 { return }
            guard api.process.isRunning else { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw TimedOut.because("the API on port \(port) never served /healthz: \(api.stderr.suffix(2_000))")
    }

    /// A new API key of `org`, made as an operator makes one: `wa-outbox apikeys create`.
    func createKey(org: String, permissions: String = "send,read") async throws -> String {
        let created = try await Subprocess.run(try TestEnvironment.executable(), [
            "apikeys", "create", "--database-url", url, "--org", org, "--name", "test-\(org)", "--permissions", permissions,
        ])
        let key = created.output.trimmingCharacters(in: .whitespacesAndNewlines)
        try #require(created.status == 0 && key.hasPrefix("wak_"), "apikeys create exited \(created.status): \(created.output)")
        return key
    }

    func count(_ sql: PostgresQuery) async throws -> Int {
        try await database.query(sql)[0].decode(Int.self, at: 0)
    }

    /// Stops every process (SIGTERM, as an orchestrator does) and records any that did not exit cleanly.
    func stop() async {
        for process in apis + workers { process.signal(SIGTERM) }
        for process in apis + workers {
            let status = await process.exitStatus()
            #expect(status == 0, "\(process.process.arguments?.first ?? "") exited \(status): \(process.stderr.suffix(2_000))")
        }
        await simulator.stop()
        await database.close()
    }
}

extension TimedOut {
    /// A liveness bound passed, with what was waited for (`TimedOut` says nothing).
    static func because(_ what: String) -> some Error { TestEnvironment.Missing(description: what) }
}
