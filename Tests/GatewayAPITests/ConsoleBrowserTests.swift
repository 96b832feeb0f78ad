import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import OutboxCore
import OutboxStore
import PostgresClient
import Simulator
import Testing
import TestSupport

/// The operator console in a real browser: headless Chromium from Debian driven by selenium (both
/// installed by scripts/test), against a live `wa-outbox api` with a worker and the HTTP simulator.
///
/// Session `s1` of org1 fails every send (the simulator refuses its token), `s2` of org1 and `s3`
/// of org2 deliver. The Python script (Tests/Console/console_browser.py) checks access (nothing
/// without a login, no action without its CSRF token), the overview's counts against the ones
/// given here, a failed job's events and audit, that a cancel asks for a reason, the org-scoped
/// operator's view, and replays s1's failed jobs through the failures page; this test then checks
/// in the database and the simulator's delivery log that they succeeded. The script saves a
/// screenshot of each page into docs/console/.
@Suite("console in a browser")
struct ConsoleBrowserTests {
    static let script = TestEnvironment.repositoryRoot.appendingPathComponent("Tests/Console/console_browser.py")
    static let token = "console-operator-token-0123456789"

    @Test func anOperatorWatchesAndReplaysThroughTheConsole() async throws {
        try await LiveGateway.run(apis: 1, workers: 1, sessions: [(org: "org1", id: "s1"), (org: "org1", id: "s2"), (org: "org2", id: "s3")],
                                  apiEnvironment: ["WA_OUTBOX_ADMIN_TOKEN": Self.token]) { gateway in
            try await gateway.simulator.setStatus("unauthorized", session: "s1")
            for (org, session, count) in [("org1", "s1", 6), ("org1", "s2", 5), ("org2", "s3", 4)] {
                for index in 0..<count {
                    _ = try await Outbox.enqueue(EnqueueRequest(org: org, session: session, kind: .send, payload: """
                        {"chat": "4915100000\(index % 3)@s.whatsapp.net", "type": "text", "text": "console test \(session) \(index)"}
                        """), in: gateway.database)
                }
            }
            try await waitUntil(gateway, "SELECT count(*) FROM wa_outbox.jobs WHERE finished_at IS NOT NULL", equals: 15)
            #expect(try await gateway.count("SELECT count(*) FROM wa_outbox.jobs WHERE session_id = 's1' AND state = 'failed'") == 6)
            // s1's engine takes its token again: a replay can succeed now.
            try await gateway.simulator.setStatus("connected", session: "s1")

            var counts: [String: Int] = [:]
            for row in try await gateway.database.query("SELECT state, count(*)::int8 FROM wa_outbox.jobs GROUP BY state") {
                counts[try row.decode(String.self, at: 0)] = try row.decode(Int.self, at: 1)
            }
            let failedJob = try await gateway.count("SELECT min(id) FROM wa_outbox.jobs WHERE session_id = 's1' AND state = 'failed'")
            let org1Job = try await gateway.count("SELECT min(id) FROM wa_outbox.jobs WHERE org = 'org1'")
            let org2Key = try await gateway.createKey(org: "org2", permissions: "operate")
            let readKey = try await gateway.createKey(org: "org2", permissions: "read")
            let screenshots = TestEnvironment.repositoryRoot.appendingPathComponent("docs/console")
            let expected = try String(data: JSONSerialization.data(withJSONObject: counts), encoding: .utf8) ?? "{}"
            let run = try await Subprocess.run(URL(fileURLWithPath: "/usr/bin/env"), [
                "python3", Self.script.path, "--base", "http://127.0.0.1:\(gateway.ports[0])", "--token", Self.token,
                "--org-key", org2Key, "--read-key", readKey, "--counts", expected, "--failed-job", String(failedJob),
                "--other-org-job", String(org1Job), "--session", "s1", "--failed-count", "6", "--screenshots", screenshots.path,
            ])
            print(run.output.split(separator: "\n").suffix(40).joined(separator: "\n"))
            try #require(run.status == 0, "the browser test failed (exit \(run.status)):\n\(run.output.suffix(6_000))")

            // The replay went through the page: every job of s1 succeeds, audited with the operator's name,
            // and each message reached the simulator once, with the id it was first sent with.
            try await waitUntil(gateway, "SELECT count(*) FROM wa_outbox.jobs WHERE session_id = 's1' AND state = 'succeeded'", equals: 6)
            #expect(try await gateway.count("""
                SELECT count(*) FROM wa_outbox.audit WHERE action = 'replay' AND actor = 'ci-operator' AND reason = 'token renewed (ci)'
                """) == 6)
            #expect(try await gateway.count("SELECT count(*) FROM wa_outbox.audit WHERE action = 'view_body' AND job_id = \(Int64(failedJob))") >= 1)
            let ids = Set(try await gateway.database.query("SELECT wa_message_id FROM wa_outbox.jobs WHERE session_id = 's1'")
                .map { try $0.decode(String.self, at: 0) })
            let delivered = try await gateway.simulator.deliveries().filter { $0.session == "s1" }
            #expect(Set(delivered.map(\.id)) == ids)
            #expect(delivered.count == 6)
            #expect(try await gateway.count("SELECT count(*) FROM wa_outbox.audit WHERE session_id = 's2' AND action IN ('pause', 'resume')") == 2)

            // A worker's admin port serves the console too, behind the same login.
            let port = try await TestEnvironment.freePort()
            let worker = try OutboxProcess(["worker", "--database-url", gateway.url, "--admin-listen", "127.0.0.1:\(port)"] + LiveGateway.unlimited,
                                           environment: ["WA_OUTBOX_ADMIN_TOKEN": Self.token])
            var login = 0, overview = 0
            for _ in 0..<600 where login != 200 {
                login = (try? await Self.status(port: port, "/console/login")) ?? 0
                overview = (try? await Self.status(port: port, "/console")) ?? 0
                if login != 200 { try await Task.sleep(for: .milliseconds(100)) }
            }
            worker.signal(SIGTERM)
            _ = await worker.exitStatus()
            #expect(login == 200 && overview == 303, "the admin port's console: login page \(login), overview without a login \(overview)")
        }
    }

    static func status(port: Int, _ path: String) async throws -> Int {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        request.method = .GET
        // Redirects not followed: a page without a login answers 303 to the login form.
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(redirectConfiguration: .disallow))
        do {
            let response = try await client.execute(request, timeout: .seconds(5))
            _ = try await response.body.collect(upTo: 1 << 20)
            try await client.shutdown()
            return Int(response.status.code)
        } catch {
            try? await client.shutdown()
            throw error
        }
    }

    private func waitUntil(_ gateway: LiveGateway, _ sql: PostgresQuery, equals target: Int) async throws {
        let deadline = ContinuousClock.now + .seconds(120)
        var last = -1
        while ContinuousClock.now < deadline {
            last = try await gateway.count(sql)
            if last == target { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw TimedOut.because("\(sql.sql) stayed at \(last), not \(target)")
    }
}
