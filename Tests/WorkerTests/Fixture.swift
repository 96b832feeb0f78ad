import AsyncHTTPClient
import Coordination
import Engines
import Foundation
import JobDispatch
import Logging
import NIOCore
import NIOHTTP1
import OutboxCore
import OutboxStore
import PostgresClient
import Simulator
import Testing
import TestSupport
import Worker

/// A migrated database of the test's own, and ways to fill it and run workers on it.
struct Fixture {
    let url: String
    let database: PostgresDatabase

    /// `url`: a server of the test's own (`PrivateServer`); by default a fresh database on the shared server.
    static func make(url: String? = nil) async throws -> Fixture {
        let url = if let url { url } else { try await TestEnvironment.freshDatabase(prefix: "outbox") }
        let database = PostgresDatabase(configuration: PostgresConfiguration(url), maxConnections: 8, logger: TestEnvironment.logger)
        try await Migrator(migrations: try Migration.load(directory: TestEnvironment.migrationsDirectory), logger: TestEnvironment.logger).migrate(database)
        return Fixture(url: url, database: database)
    }

    func addSessions(_ ids: [String], org: String = "org1", engine: String = "sim", url: String? = nil, maxInFlight: Int = 1,
                     credentialRef: String? = nil) async throws {
        for id in ids {
            try await SessionRegistry.upsert(SessionRecord(id: id, org: org, engine: engine, engineURL: url, credentialRef: credentialRef,
                                                           maxInFlight: maxInFlight), in: database)
        }
    }

    /// Enqueues `count` text sends through `wa_outbox.enqueue`, job i to chat `chats[i % chats.count]`
    /// of session `sessions[i % sessions.count]`, in order.
    func enqueueTexts(count: Int, sessions: [String], chatsPerSession: Int, org: String = "org1") async throws {
        try await database.query("""
            SELECT count(*) FROM (
                SELECT wa_outbox.enqueue(\(org), s.ids[1 + g % cardinality(s.ids)], 'send',
                    jsonb_build_object('type', 'text', 'text', 'message ' || g,
                        'chat', (4915100000000 + (g / cardinality(s.ids)) % \(chatsPerSession))::text || '@s.whatsapp.net'))
                FROM generate_series(0, \(count) - 1) g, (SELECT \(sessions)::text[] AS ids) s
                ORDER BY g
            ) enqueued
            """)
    }

    func count(_ sql: String) async throws -> Int {
        try await database.query(PostgresQuery(sql))[0].decode(Int.self, at: 0)
    }

    /// A connection of its own with a transaction open, after `sql` ran in it.
    func openTransaction(_ sql: String) async throws -> PostgresConnection {
        let connection = try await PostgresConnection.connect(PostgresConfiguration(url), logger: TestEnvironment.logger)
        try await connection.execute("BEGIN")
        try await connection.query(PostgresQuery(sql))
        return connection
    }

    /// How many backends of this database wait on a lock that another backend of this database
    /// holds, in a statement containing `fragment`, once at least one does (or after 2 s).
    ///
    /// Only a blocker in this database counts. Tests run in parallel on one shared server, and
    /// each transaction that notified takes the cluster-wide `NOTIFY` lock at commit: a statement
    /// ending in `pg_notify` can wait a moment for another test's commit, which is no wait on
    /// anything this test holds (that wait once failed the health-check test in CI).
    func backendsWaitingOnALock(inStatementsContaining fragment: String) async throws -> Int {
        let pattern = "%\(fragment)%"
        var waiting = 0
        for _ in 0..<200 where waiting == 0 {
            waiting = try await database.query("""
                SELECT count(*) FROM pg_stat_activity w
                WHERE w.datname = current_database() AND w.wait_event_type = 'Lock' AND w.query LIKE \(pattern)
                  AND EXISTS (SELECT 1 FROM pg_stat_activity b
                              WHERE b.pid = ANY (pg_blocking_pids(w.pid)) AND b.datname = current_database())
                """)[0].decode(Int.self, at: 0)
            if waiting == 0 { try await Task.sleep(for: .milliseconds(10)) }
        }
        return waiting
    }

    /// The job ids in enqueue order per (session, chat), keyed by message id.
    func jobsByMessageID() async throws -> [String: (id: Int64, session: String, chat: String)] {
        var result: [String: (Int64, String, String)] = [:]
        for row in try await database.query("SELECT wa_message_id, id, session_id, chat FROM wa_outbox.jobs WHERE kind = 'send'") {
            result[try row.decode(at: 0)] = (try row.decode(at: 1), try row.decode(at: 2), try row.decode(at: 3))
        }
        return result
    }

    /// Drains the queue through a simulator with `configuration` that logs its deliveries, and
    /// returns them, checked against the jobs: each message delivered once, to its own chat.
    func drainLoggingDeliveries(_ configuration: SimulatorConfiguration, name: String) async throws -> [Delivery] {
        let log = try TestEnvironment.scratchDirectory(name).appendingPathComponent("deliveries.jsonl")
        let simulator = try WhatsAppSimulator(configuration: configuration, deliveryLog: log)
        try await drain(simulator: simulator)
        await simulator.flush()
        let deliveries = try String(contentsOf: log, encoding: .utf8).split(separator: "\n").map { try JSONDecoder().decode(Delivery.self, from: Data($0.utf8)) }
        #expect(checkDeliveries(deliveries, jobs: try await jobsByMessageID()) == [])
        return deliveries
    }

    /// Runs an in-process worker until the queue is drained.
    @discardableResult
    func drain(simulator: WhatsAppSimulator, coordinator: Coordinator? = nil, limits: SessionLimits = SessionLimits(),
               requestTimeout: Duration = .seconds(30), engine: (any SessionEngine)? = nil,
               configure: (inout WorkerConfiguration) -> Void = { _ in }) async throws -> Worker {
        let worker = makeWorker(simulator: simulator, coordinator: coordinator, limits: limits, requestTimeout: requestTimeout, engine: engine) {
            $0.exitWhenIdle = true
            configure(&$0)
        }
        try await worker.run()
        return worker
    }

    /// An in-process worker with test timings: retries after 10-50 ms; the caller runs it.
    func makeWorker(simulator: WhatsAppSimulator, coordinator: Coordinator? = nil, limits: SessionLimits = SessionLimits(),
                    requestTimeout: Duration = .seconds(30), engine: (any SessionEngine)? = nil,
                    configure: (inout WorkerConfiguration) -> Void = { _ in }) -> Worker {
        var configuration = WorkerConfiguration(name: "test")
        configuration.pollInterval = .milliseconds(50)
        configuration.retry = RetryPolicy(base: .milliseconds(10), cap: .milliseconds(50), sessionRecheck: .milliseconds(50))
        configure(&configuration)
        return Worker(configuration: configuration, database: database, listenerConfiguration: PostgresConfiguration(url),
                      engines: engines(simulator: simulator, requestTimeout: requestTimeout, limits: limits, engine: engine),
                      coordinator: coordinator, logger: TestEnvironment.logger)
    }

    /// The engines a worker offers, the in-process simulator among them, as the executable registers
    /// them; `engine`, when given, stands in for the simulator's.
    func engines(simulator: WhatsAppSimulator, requestTimeout: Duration = .seconds(30), limits: SessionLimits = SessionLimits(),
                 engine: (any SessionEngine)? = nil) -> EngineDirectory {
        var factories = EngineDirectory.httpEngines(requestTimeout: requestTimeout)
        factories["sim"] = { _, _ in engine ?? SimulatorEngine(simulator: simulator) }
        return EngineDirectory(database: database, engines: factories, defaultLimits: limits)
    }

    func close() async {
        await database.close()
    }
}

/// Checks a delivery log against the jobs: every send delivered once, in enqueue order per chat.
func checkDeliveries(_ deliveries: [Delivery], jobs: [String: (id: Int64, session: String, chat: String)]) -> [String] {
    var problems: [String] = []
    let sends = deliveries.filter { $0.kind == "send" }
    let ids = sends.map(\.id)
    if Set(ids).count != ids.count { problems.append("\(ids.count - Set(ids).count) duplicate deliveries") }
    if Set(ids) != Set(jobs.keys) { problems.append("delivered \(Set(ids).count) distinct ids for \(jobs.count) jobs") }
    var lastPerChat: [String: Int64] = [:]
    var outOfOrder = 0
    for delivery in sends {
        guard let job = jobs[delivery.id] else { continue }
        let lane = "\(job.session) \(job.chat)"
        if let last = lastPerChat[lane], last > job.id { outOfOrder += 1 }
        lastPerChat[lane] = job.id
    }
    if outOfOrder > 0 { problems.append("\(outOfOrder) deliveries out of enqueue order within their chat") }
    return problems
}
