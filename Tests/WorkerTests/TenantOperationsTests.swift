import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import OutboxCore
import OutboxStore
import PostgresClient
import Testing
import TestSupport

/// The operator's tools scoped to one organization never reach another's: the CLI's `--org`
/// filters (jobs list, show, replay, cancel; sessions show, set, remove, add; events tail; stats;
/// apikeys list and revoke) and the admin API's `org` filter (list, show, replay, cancel, stats).
@Suite("Tenant isolation: the CLI's and the admin API's organization filters")
struct TenantOperationsTests {
    static let token = "tenant-operator-token"

    /// org1 and org2 with three failed jobs each, their sessions paused so nothing dispatches.
    static func twoOrganizations() async throws -> (Fixture, mine: [Int64], theirs: [Int64]) {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["a1"], org: "org1")
        try await fixture.addSessions(["b1"], org: "org2")
        try await fixture.enqueueTexts(count: 3, sessions: ["a1"], chatsPerSession: 1, org: "org1")
        try await fixture.enqueueTexts(count: 3, sessions: ["b1"], chatsPerSession: 1, org: "org2")
        try await fixture.database.query("""
            UPDATE wa_outbox.jobs SET state = 'failed', finished_at = now(), error_code = 'engine_error', error_message = 'down'
            """)
        try await fixture.database.query("UPDATE wa_outbox.lanes SET pending = 0, ready_at = NULL")
        try await fixture.database.query("UPDATE wa_outbox.sessions SET state = 'paused'")
        func ids(_ org: String) async throws -> [Int64] {
            try await fixture.database.query("SELECT id FROM wa_outbox.jobs WHERE org = \(org) ORDER BY id").map { try $0.decode(Int64.self, at: 0) }
        }
        return (fixture, try await ids("org1"), try await ids("org2"))
    }

    static func states(_ fixture: Fixture, _ ids: [Int64]) async throws -> [String] {
        try await fixture.database.query("SELECT state FROM wa_outbox.jobs WHERE id = ANY(\(ids)) ORDER BY id").map { try $0.decode(String.self, at: 0) }
    }

    @Test func theCLIsOrganizationFiltersKeepToTheirOrganization() async throws {
        let (fixture, mine, theirs) = try await Self.twoOrganizations()
        let cli = try TestEnvironment.executable()
        func run(_ arguments: String...) async throws -> Subprocess.Result {
            try await Subprocess.run(cli, arguments + ["--database-url", fixture.url])
        }
        let listed = try await run("jobs", "list", "--org", "org1", "--json")
        #expect(listed.status == 0)
        let rows = listed.output.split(separator: "\n").compactMap { try? JSONDecoder().decode(JobSummary.self, from: Data($0.utf8)) }
        #expect(rows.map(\.id).sorted() == mine && rows.allSatisfy { $0.org == "org1" })

        #expect(try await run("jobs", "show", String(theirs[0]), "--org", "org1").status != 0)
        #expect(try await run("jobs", "show", String(mine[0]), "--org", "org1").status == 0)

        // Replay and cancel by id with another organization named: nothing happens.
        _ = try await run("jobs", "replay", "--org", "org1", "--id", String(theirs[0]), "--reason", "cross")
        #expect(try await Self.states(fixture, theirs) == ["failed", "failed", "failed"])
        let replayed = try await run("jobs", "replay", "--org", "org1", "--reason", "fixed")
        #expect(replayed.status == 0, "\(replayed.output)")
        #expect(try await Self.states(fixture, mine) == ["queued", "queued", "queued"])
        #expect(try await Self.states(fixture, theirs) == ["failed", "failed", "failed"])
        _ = try await run("jobs", "cancel", "--org", "org2", "--id", String(mine[0]), "--reason", "cross")
        #expect(try await Self.states(fixture, mine) == ["queued", "queued", "queued"])

        // Sessions: another organization's is not found, and cannot be changed, removed or taken.
        #expect(try await run("sessions", "show", "--id", "b1", "--org", "org1").status != 0)
        #expect(try await run("sessions", "set", "--id", "b1", "--org", "org1", "--max-in-flight", "9").status != 0)
        #expect(try await run("sessions", "remove", "--id", "b1", "--org", "org1").status != 0)
        #expect(try await run("sessions", "add", "--id", "b1", "--org", "org1", "--engine", "sim").status != 0)
        let b1 = try #require(try await SessionRegistry.find("b1", in: fixture.database))
        #expect(b1.org == "org2" && b1.maxInFlight == 1)
        let sessions = try await run("sessions", "list", "--org", "org1")
        #expect(sessions.output.contains("\"a1\"") && !sessions.output.contains("\"b1\""))

        // Events and stats of one organization.
        // The log is read in commit order, up to the oldest transaction still open anywhere in the
        // cluster (ARCHITECTURE, "Stream"); on the shared test server another suite's may be open
        // for a moment, so an empty answer is asked again.
        var events = try await run("events", "tail", "--org", "org1")
        let deadline = ContinuousClock.now + .seconds(60)
        while events.status == 0, events.output.isEmpty, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(250))
            events = try await run("events", "tail", "--org", "org1")
        }
        #expect(events.status == 0 && !events.output.isEmpty)
        #expect(!events.output.contains("\"b1\"") && !events.output.contains("org2"))
        let stats = try await run("stats", "--org", "org2", "--json")
        #expect(stats.output.contains("\"failed\":3") && !stats.output.contains("\"queued\":3"), "\(stats.output)")

        // API keys: listed and revoked within their organization only.
        let key = try await APIKeys.create(org: "org2", name: "theirs", permissions: ["send"], in: fixture.database)
        #expect(!(try await run("apikeys", "list", "--org", "org1")).output.contains(key.record.prefix))
        #expect(try await run("apikeys", "revoke", "--id", String(key.record.id), "--org", "org1").status != 0)
        #expect(try await APIKeys.verify(key.key, in: fixture.database) != nil, "org2's key still works")
        await fixture.close()
    }

    @Test func theAdminAPIsOrganizationFilterKeepsToItsOrganization() async throws {
        let (fixture, mine, theirs) = try await Self.twoOrganizations()
        let port = try await TestEnvironment.freePort()
        let admin = "http://127.0.0.1:\(port)/admin"
        let worker = try OutboxProcess(["worker", "--database-url", fixture.url, "--admin-listen", "127.0.0.1:\(port)", "--no-limits"],
                                       environment: ["WA_OUTBOX_ADMIN_TOKEN": Self.token])
        defer { worker.signal(SIGKILL) }
        func call(_ method: HTTPMethod, _ path: String, _ body: String? = nil) async throws -> (UInt, String) {
            try await AdminTests().call(method.rawValue, admin + path, token: Self.token, body: body)
        }
        var listed: (UInt, String) = (0, "")
        for _ in 0..<600 {
            if let answer = try? await call(.GET, "/jobs?org=org1"), answer.0 == 200 { listed = answer; break }
            try await Task.sleep(for: .milliseconds(100))
        }
        let jobs = try JSONDecoder.iso8601.decode([JobSummary].self, from: Data(listed.1.utf8))
        #expect(jobs.map(\.id).sorted() == mine && jobs.allSatisfy { $0.org == "org1" })
        #expect(try await call(.GET, "/jobs/\(theirs[0])?org=org1").0 == 404)
        #expect(try await call(.GET, "/jobs/\(mine[0])?org=org1").0 == 200)
        #expect(try await call(.GET, "/jobs?org=org1&kind=bogus").0 == 400, "an unknown kind does not widen the selection")

        let crossReplay = try await call(.POST, "/jobs/replay", #"{"org":"org1","ids":\#(theirs),"reason":"cross"}"#)
        #expect(crossReplay.0 == 200 && crossReplay.1.contains(#""done":[]"#), "\(crossReplay.1)")
        #expect(try await Self.states(fixture, theirs) == ["failed", "failed", "failed"])
        #expect(try await call(.POST, "/jobs/replay", #"{"org":"org1","reason":"fixed"}"#).0 == 200)
        #expect(try await Self.states(fixture, mine) == ["queued", "queued", "queued"])
        #expect(try await Self.states(fixture, theirs) == ["failed", "failed", "failed"])
        _ = try await call(.POST, "/jobs/cancel", #"{"org":"org2","ids":\#(mine),"reason":"cross"}"#)
        #expect(try await Self.states(fixture, mine) == ["queued", "queued", "queued"])
        let stats = try await call(.GET, "/stats?org=org2")
        #expect(stats.0 == 200 && stats.1.contains("\"failed\":3") && !stats.1.contains("\"queued\":3"), "\(stats.1)")
        worker.signal(SIGTERM)
        _ = await worker.exitStatus()
        await fixture.close()
    }
}

extension JSONDecoder {
    static var iso8601: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }
}
