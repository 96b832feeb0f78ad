import Foundation
import OutboxCore
import OutboxStore
import PostgresClient
import Simulator
import Testing
import TestSupport

/// Whole jobs through a worker against the HTTP simulator answering as a given engine version.
@Suite("Jobs against engine versions as they answer", .serialized)
struct EngineVersionTests {
    @Test func aWAHASessionThatIsNotRunningWaitsWithoutSpendingAttemptsAndShowsDisconnected() async throws {
        let fixture = try await Fixture.make()
        let simulator = try await HTTPSimulator.start(["--dialect", "waha"])
        try await fixture.addSessions(["stopped", "fine"], engine: "waha", url: simulator.baseURL)
        try await simulator.setStatus("disconnected", session: "stopped")  // WAHA answers 404 "We didn't find a session…"
        try await fixture.enqueueTexts(count: 10, sessions: ["stopped"], chatsPerSession: 2)
        try await fixture.enqueueTexts(count: 10, sessions: ["fine"], chatsPerSession: 2)
        try await fixture.drain(simulator: try WhatsAppSimulator())

        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE session_id = 'stopped' AND state = 'queued' AND attempts = 0") == 10)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.events WHERE session_id = 'stopped' AND status IN ('retrying', 'failed')") == 0)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.sessions WHERE id = 'stopped' AND engine_status = 'disconnected'") == 1)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE session_id = 'fine' AND state = 'succeeded'") == 10)
        await simulator.stop()
        await fixture.close()
    }

    @Test func aSendThatMayHaveArrivedOnNOWEBWithoutItsStoreFailsVisiblyAndIsNotSentAgain() async throws {
        let fixture = try await Fixture.make()
        let simulator = try await HTTPSimulator.start(["--dialect", "waha"])
        #expect(try await simulator.post("/sim/profile", #"{"profile":"waha-2024.10-core-noweb"}"#) == 200)
        try await fixture.addSessions(["default"], engine: "waha", url: simulator.baseURL)
        try await fixture.enqueueTexts(count: 1, sessions: ["default"], chatsPerSession: 1)
        // As after an attempt that timed out: WAHA may have the message, and NOWEB cannot say.
        try await fixture.database.query("UPDATE wa_outbox.jobs SET maybe_sent = true")
        try await fixture.drain(simulator: try WhatsAppSimulator())

        let rows = try await fixture.database.query("SELECT state, error_code, error_message FROM wa_outbox.jobs")
        #expect(try rows[0].decode(String.self, at: 0) == "failed")
        #expect(try rows[0].decode(String?.self, at: 1) == "engine_unsupported")
        #expect(try rows[0].decode(String?.self, at: 2)?.contains("not sent again") == true)
        #expect(try await simulator.stats().delivered == 0)
        await simulator.stop()
        await fixture.close()
    }

    @Test func anEngineWithoutTheMethodFailsTheJobAtOnceNamingIt() async throws {
        let fixture = try await Fixture.make()
        let simulator = try await HTTPSimulator.start(["--dialect", "wuzapi"])
        #expect(try await simulator.post("/sim/profile", #"{"profile":"wuzapi-2025.05"}"#) == 200)
        try await fixture.addSessions(["w"], engine: "wuzapi", url: simulator.baseURL)
        let poll = try await Outbox.enqueue(EnqueueRequest(org: "org1", session: "w", kind: .send,
                                                           payload: #"{"type":"poll","chat":"120363313346913103@g.us","name":"Lunch?","options":["Pizza","Sushi"]}"#),
                                            in: fixture.database)
        try await fixture.drain(simulator: try WhatsAppSimulator())

        let rows = try await fixture.database.query("SELECT state, attempts, error_code, error_message FROM wa_outbox.jobs WHERE id = \(Int64(poll.outboxId)!)")
        #expect(try rows[0].decode(String.self, at: 0) == "failed")
        #expect(try rows[0].decode(Int.self, at: 1) == 1)
        #expect(try rows[0].decode(String?.self, at: 2) == "engine_unsupported")
        #expect(try rows[0].decode(String?.self, at: 3)?.contains("/chat/send/poll") == true)
        await simulator.stop()
        await fixture.close()
    }

    @Test func sessionsCheckSaysWhatWillWorkOnEachVersionAndAddWarns() async throws {
        let fixture = try await Fixture.make()
        let cli = try TestEnvironment.executable()
        func run(_ arguments: String...) async throws -> Subprocess.Result {
            try await Subprocess.run(cli, ["sessions"] + arguments + ["--database-url", fixture.url])
        }
        func works(_ output: String, _ operation: String) throws -> Bool? {
            let check = try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any])
            let operations = try #require(check["operations"] as? [[String: Any]])
            return try #require(operations.first { $0["name"] as? String == operation })["works"] as? Bool
        }
        let waha = try await HTTPSimulator.start(["--dialect", "waha"])
        #expect(try await waha.post("/sim/profile", #"{"profile":"waha-2024.10-core-webjs"}"#) == 200)
        let added = try await run("add", "--id", "sales", "--org", "acme", "--engine", "waha", "--url", waha.baseURL)
        #expect(added.status == 0, "\(added.output)")
        #expect(added.output.contains("only the 'default' session"), "\(added.output)")
        let sales = try await run("check", "--id", "sales", "--org", "acme")
        #expect(sales.status == 0, "\(sales.output)")
        let check = try JSONSerialization.jsonObject(with: Data(sales.output.utf8)) as? [String: Any]
        #expect(check?["tier"] as? String == "CORE")
        #expect(check?["backend"] as? String == "WEBJS")
        #expect(check?["version"] as? String == "2024.10.8")
        #expect(try works(sales.output, "send text") == false)
        _ = try await run("add", "--id", "default", "--org", "acme", "--engine", "waha", "--url", waha.baseURL)
        let main = try await run("check", "--id", "default", "--org", "acme")
        #expect(try works(main.output, "send text") == true)
        #expect(try works(main.output, "send poll") == false)
        #expect(try works(main.output, "signed receipt webhooks") == false)

        let wuzapi = try await HTTPSimulator.start(["--dialect", "wuzapi"])
        #expect(try await wuzapi.post("/sim/profile", #"{"profile":"wuzapi-2025.05"}"#) == 200)
        _ = try await run("add", "--id", "w1", "--org", "acme", "--engine", "wuzapi", "--url", wuzapi.baseURL)
        let old = try await run("check", "--id", "w1", "--org", "acme")
        #expect(old.output.contains("\"status\":\"connected\""), "\(old.output)")
        #expect(try works(old.output, "edit") == false)
        #expect(try works(old.output, "revoke another's") == false)
        await waha.stop()
        await wuzapi.stop()
        await fixture.close()
    }
}
