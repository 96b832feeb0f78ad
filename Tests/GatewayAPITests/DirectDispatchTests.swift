import Foundation
import OutboxStore
import PostgresClient
import Simulator
import Testing
import TestSupport

/// An API process dispatches a synchronous send itself when its job may run at once
/// (`DirectDispatch`), under the worker's rules: in its chat's turn only, under a lease the
/// workers' rescue honours.
@Suite("API processes dispatching their synchronous sends")
struct DirectDispatchTests {
    /// A liveness bound for a loaded CI machine, never a measured time.
    static let liveness = Duration.seconds(120)

    static func text(_ chat: Int, _ text: String) -> String {
        #"{"type":"text","chat":"\#(4915100000000 + chat)@s.whatsapp.net","text":"\#(text)"}"#
    }

    /// With no worker at all, a send, its edit and its revoke are answered with their final
    /// results: the API claimed and dispatched each, wrote one final event each, and held a lease.
    @Test func anAPIWithoutWorkersAnswersSendEditAndRevoke() async throws {
        try await LiveGateway.run(apis: 1, workers: 0, sessions: [(org: "org1", id: "s1")]) { gateway in
            let headers = [("Authorization", "Bearer \(try await gateway.createKey(org: "org1"))"), ("Content-Type", "application/json")]
            try await Self.waitForLease(gateway)
            let port = gateway.ports[0]
            let sent = try await request(port: port, method: "POST", "/api/v1/sessions/s1/messages", headers: headers, body: Self.text(1, "hello"))
            #expect(sent.status == 200, "\(sent.body)")
            let result = try Self.json(sent.body)
            #expect(result["status"] as? String == "sent" && result["mode"] as? String == "sync")
            let mid = try #require(result["waMessageId"] as? String)
            let chat = #"{"chat":"4915100000001@s.whatsapp.net"}"#
            let edited = try await request(port: port, method: "PATCH", "/api/v1/sessions/s1/messages/\(mid)", headers: headers,
                                           body: #"{"chat":"4915100000001@s.whatsapp.net","text":"hello again"}"#)
            #expect(edited.status == 200, "\(edited.body)")
            #expect(try Self.json(edited.body)["status"] as? String == "edited")
            let revoked = try await request(port: port, method: "DELETE", "/api/v1/sessions/s1/messages/\(mid)", headers: headers, body: chat)
            #expect(revoked.status == 200, "\(revoked.body)")
            #expect(try Self.json(revoked.body)["status"] as? String == "revoked")

            #expect(try await gateway.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded' AND worker_id IS NULL AND attempts = 1") == 3)
            #expect(try await gateway.count("SELECT count(*) FROM wa_outbox.events WHERE status IN ('sent', 'edited', 'revoked')") == 3)
            #expect(try await gateway.count("SELECT count(*) FROM wa_outbox.sessions WHERE in_flight <> 0") == 0)
            #expect(try await gateway.count("SELECT count(*) FROM wa_outbox.lanes WHERE busy") == 0)
            #expect(try await gateway.simulator.stats().delivered == 1)
        }
    }

    /// A synchronous send behind a queued job of its chat is not taken by the API: it waits for the
    /// workers (here none, so it answers 202 at its deadline), and once a worker runs, the earlier
    /// job goes first.
    @Test func aSynchronousSendNeverOvertakesItsChat() async throws {
        try await LiveGateway.run(apis: 1, workers: 0, sessions: [(org: "org1", id: "s1")], apiArguments: ["--sync-timeout-ms", "1500"]) { gateway in
            let headers = [("Authorization", "Bearer \(try await gateway.createKey(org: "org1"))"), ("Content-Type", "application/json")]
            try await Self.waitForLease(gateway)
            let port = gateway.ports[0]
            let first = try await request(port: port, method: "POST", "/api/v1/sessions/s1/messages?async=true", headers: headers, body: Self.text(1, "first"))
            #expect(first.status == 202, "\(first.body)")
            let second = try await request(port: port, method: "POST", "/api/v1/sessions/s1/messages", headers: headers, body: Self.text(1, "second"))
            #expect(second.status == 202, "the send behind a queued job was answered: \(second.body)")
            // Another chat of the same session is not held back by it.
            let other = try await request(port: port, method: "POST", "/api/v1/sessions/s1/messages", headers: headers, body: Self.text(2, "other"))
            #expect(other.status == 200, "\(other.body)")
            #expect(try await gateway.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'queued'") == 2)

            let worker = try OutboxProcess(["worker", "--database-url", gateway.url, "--admin-listen", "off", "--poll-interval-ms", "200"] + LiveGateway.unlimited)
            defer { worker.signal(SIGKILL) }
            let deadline = ContinuousClock.now + Self.liveness
            while try await gateway.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'") < 3 {
                try #require(ContinuousClock.now < deadline, "the worker never sent the queued jobs: \(worker.stderr.suffix(2_000))")
                try await Task.sleep(for: .milliseconds(100))
            }
            let order = try await gateway.database.query("SELECT payload->>'text' FROM wa_outbox.jobs WHERE chat LIKE '%0001@%' ORDER BY sent_at")
            #expect(try order.map { try $0.decode(String.self, at: 0) } == ["first", "second"])
        }
    }

    /// An engine slower than the request's deadline: the API answers 202 naming the job, and its
    /// own dispatch carries on to the end (no worker runs): sent once, one final event.
    @Test func aSendSlowerThanItsDeadlineIsAnswered202AndStillSentOnce() async throws {
        let lone = try await LoneAPI.start(simulator: ["--sim-latency-ms", "2500"], api: ["--sync-timeout-ms", "500"])
        defer { lone.stop() }
        let (database, simulator, port, key) = (lone.database, lone.simulator, lone.port, lone.key)
        let deadline = ContinuousClock.now + Self.liveness
        let answer = try await request(port: port, method: "POST", "/api/v1/sessions/s1/messages",
                                       headers: [("Authorization", "Bearer \(key)"), ("Content-Type", "application/json")], body: Self.text(1, "slow"))
        #expect(answer.status == 202, "\(answer.body)")
        let outboxID = try #require(try Self.json(answer.body)["outboxId"] as? String)
        while try await database.query("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'")[0].decode(Int.self, at: 0) == 0 {
            try #require(ContinuousClock.now < deadline, "the API's dispatch never finished: \(lone.api.stderr.suffix(2_000))")
            try await Task.sleep(for: .milliseconds(100))
        }
        let job = try await database.query("SELECT id, attempts FROM wa_outbox.jobs")
        #expect(try String(job[0].decode(Int64.self, at: 0)) == outboxID && job[0].decode(Int.self, at: 1) == 1)
        #expect(try await database.query("SELECT count(*) FROM wa_outbox.events WHERE status = 'sent'")[0].decode(Int.self, at: 0) == 1)
        #expect(try await simulator.stats().delivered == 1)
    }

    /// An API process killed while its engine call is under way: the job is neither lost nor sent
    /// twice. Its lease lapses, a worker's rescue requeues the job as `worker_lost` (it may have
    /// arrived), and the worker's attempt finds the message already there.
    @Test func anAPIKilledMidDispatchLeavesItsJobToTheRescue() async throws {
        let lone = try await LoneAPI.start(simulator: ["--sim-latency-ms", "3000"], api: ["--lease-ms", "1000"])
        defer { lone.stop() }
        let (url, database, simulator, api, port, key) = (lone.url, lone.database, lone.simulator, lone.api, lone.port, lone.key)
        let deadline = ContinuousClock.now + Self.liveness
        let sending = Task {
            try? await request(port: port, method: "POST", "/api/v1/sessions/s1/messages",
                               headers: [("Authorization", "Bearer \(key)"), ("Content-Type", "application/json")], body: Self.text(1, "once"))
        }
        // The job is running under the API's lease, its engine call under way: kill the API.
        while try await database.query("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'running'")[0].decode(Int.self, at: 0) == 0 {
            try #require(ContinuousClock.now < deadline, "the API never claimed the job: \(api.stderr.suffix(2_000))")
            try await Task.sleep(for: .milliseconds(20))
        }
        try await Task.sleep(for: .milliseconds(300))
        api.signal(SIGKILL)
        _ = await sending.value

        let worker = try OutboxProcess(["worker", "--database-url", url, "--admin-listen", "off", "--poll-interval-ms", "200", "--lease-ms", "1000"]
                                       + LiveGateway.unlimited)
        defer { worker.signal(SIGKILL) }
        while try await database.query("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'")[0].decode(Int.self, at: 0) == 0 {
            try #require(ContinuousClock.now < deadline, "the job was never rescued and sent: \(worker.stderr.suffix(2_000))")
            try await Task.sleep(for: .milliseconds(100))
        }
        let job = try await database.query("SELECT attempts, maybe_sent FROM wa_outbox.jobs")
        #expect(try job[0].decode(Int.self, at: 0) == 2 && job[0].decode(Bool.self, at: 1), "the rescue did not count the lost attempt as maybe sent")
        #expect(try await database.query("SELECT count(*) FROM wa_outbox.events WHERE status = 'sent'")[0].decode(Int.self, at: 0) == 1)
        let stats = try await simulator.stats()
        #expect(stats.delivered == 1 && stats.deliveredTwice == 0, "\(stats)")
    }

    /// Waits until the API process holds its dispatch lease (a liveness bound).
    static func waitForLease(_ gateway: LiveGateway) async throws {
        let deadline = ContinuousClock.now + liveness
        while try await gateway.count("SELECT count(*) FROM wa_outbox.workers WHERE name LIKE 'api-%'") < gateway.apis.count {
            try #require(ContinuousClock.now < deadline, "the API never took its dispatch lease")
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    static func json(_ body: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])
    }
}

/// One API process and no worker, on a database of its own, with the HTTP simulator (wuzapi's
/// dialect) as session s1's engine; returned once the API holds its dispatch lease.
struct LoneAPI {
    let url: String
    let database: PostgresDatabase
    let simulator: HTTPSimulator
    let api: OutboxProcess
    let port: Int
    let key: String

    static func start(simulator simulatorArguments: [String], api apiArguments: [String]) async throws -> LoneAPI {
        let url = try await TestEnvironment.freshDatabase(prefix: "direct")
        let database = PostgresDatabase(configuration: PostgresConfiguration(url), maxConnections: 2, logger: TestEnvironment.logger)
        try await Migrator(migrations: try Migration.load(directory: TestEnvironment.migrationsDirectory), logger: TestEnvironment.logger).migrate(database)
        let simulator = try await HTTPSimulator.start(simulatorArguments)
        var record = SessionRecord(id: "s1", org: "org1", engine: "wuzapi", engineURL: simulator.baseURL, maxInFlight: 4)
        (record.ratePerSecond, record.burst, record.pacing) = (100_000, 100_000, false)
        try await SessionRegistry.upsert(record, in: database)
        let port = try await TestEnvironment.freePort()
        let api = try OutboxProcess(["api", "--database-url", url, "--listen", "127.0.0.1:\(port)", "--metrics-listen", "off"]
                                    + LiveGateway.unlimited + apiArguments)
        let lone = LoneAPI(url: url, database: database, simulator: simulator, api: api, port: port,
                           key: try await Self.key(url))
        let deadline = ContinuousClock.now + DirectDispatchTests.liveness
        while try await database.query("SELECT count(*) FROM wa_outbox.workers WHERE name LIKE 'api-%'")[0].decode(Int.self, at: 0) == 0 {
            guard ContinuousClock.now < deadline, api.process.isRunning else {
                lone.stop()
                throw TimedOut.because("the API never took its lease: \(api.stderr.suffix(2_000))")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        return lone
    }

    private static func key(_ url: String) async throws -> String {
        let created = try await Subprocess.run(try TestEnvironment.executable(), ["apikeys", "create", "--database-url", url, "--org", "org1",
                                                                                  "--name", "t", "--permissions", "send"])
        return created.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func stop() {
        api.signal(SIGKILL)
        let (simulator, database) = (simulator, database)
        Task {
            await simulator.stop()
            await database.close()
        }
    }
}
