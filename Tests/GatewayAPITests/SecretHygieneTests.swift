import Foundation
import OutboxStore
import PostgresClient
import Testing
import TestSupport

/// Credentials never show: an API and a worker run with known database passwords, an API key, an
/// operator token, an engine token, a webhook secret and a ticket secret, at debug level; requests
/// that succeed and requests that fail in every way that names a credential go through them; then
/// their logs, both `/metrics`, `jobs show` (with and without the body), the HTTP error bodies and
/// the CLI's own errors are searched for every one of those secrets.
@Suite("Secrets never reach logs, errors, /metrics or jobs show")
struct SecretHygieneTests {
    @Test func noSecretAppearsAnywhereTheProcessesWrite() async throws {
        let marker = UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        let passwords = ["api": "apipass\(marker)", "worker": "workerpass\(marker)", "operator": "operatorpass\(marker)"]
        let logins = try await LeastPrivilegeTests.logins(passwords: passwords)
        let adminToken = "admintoken\(marker)"
        let engineToken = "enginetoken\(marker)"
        let webhookSecret = "webhooksecret\(marker)"
        let ticketSecret = "ticketsecret\(marker)\(marker)"

        let url = try await TestEnvironment.freshStreamDatabase(prefix: "secrets")
        let database = PostgresDatabase(configuration: PostgresConfiguration(url), maxConnections: 2, logger: TestEnvironment.logger)
        try await Migrator(migrations: try Migration.load(directory: TestEnvironment.migrationsDirectory), logger: TestEnvironment.logger).migrate(database)
        let simulator = try await HTTPSimulator.start(["--api-key", engineToken])
        var record = SessionRecord(id: "s1", org: "org1", engine: "wuzapi", engineURL: simulator.baseURL, credentialRef: "env:WA_TEST_ENGINE_TOKEN",
                                   maxInFlight: 4)
        record.ratePerSecond = 100_000
        record.burst = 100_000
        record.pacing = false
        try await SessionRegistry.upsert(record, in: database)

        let (apiPort, metricsPort, adminPort) = (try await TestEnvironment.freePort(), try await TestEnvironment.freePort(), try await TestEnvironment.freePort())
        let common = LiveGateway.unlimited + ["--redis-prefix", "secrets-\(marker.prefix(8))"]
        let debug = ["WA_OUTBOX_LOG_LEVEL": "debug"]
        let worker = try OutboxProcess(["worker", "--database-url", logins["worker"]!.url(url), "--admin-listen", "127.0.0.1:\(adminPort)",
                                        "--poll-interval-ms", "200"] + common,
                                       environment: debug.merging(["WA_OUTBOX_ADMIN_TOKEN": adminToken, "WA_TEST_ENGINE_TOKEN": engineToken,
                                                                   "WA_OUTBOX_WUZAPI_WEBHOOK_SECRET": webhookSecret]) { $1 })
        let api = try OutboxProcess(["api", "--database-url", logins["api"]!.url(url), "--listen", "127.0.0.1:\(apiPort)",
                                     "--metrics-listen", "127.0.0.1:\(metricsPort)"] + common,
                                    environment: debug.merging(["WA_OUTBOX_TICKET_SECRET": ticketSecret]) { $1 })
        var seen: [(String, String)] = []  // (where, text)
        var secrets = Array(passwords.values) + [adminToken, engineToken, webhookSecret, ticketSecret]
        do {
            let started = ContinuousClock.now
            while (try? await request(port: apiPort, "/healthz"))?.status != 200, ContinuousClock.now < started + .seconds(120) {
                try await Task.sleep(for: .milliseconds(100))
            }
            let cli = try TestEnvironment.executable()
            let operatorURL = logins["operator"]!.url(url)
            let key = try await Subprocess.run(cli, ["apikeys", "create", "--database-url", operatorURL, "--org", "org1", "--name", "s", "--permissions", "send,read"])
                .output.trimmingCharacters(in: .whitespacesAndNewlines)
            try #require(key.hasPrefix("wak_live_"))
            let wrongKey = String(key.dropLast(8)) + "00000000"
            secrets += [key, String(key.split(separator: "_").last!), wrongKey, String(wrongKey.split(separator: "_").last!)]

            let json = ("Content-Type", "application/json")
            let text = #"{"type":"text","chat":"4915112345678@s.whatsapp.net","text":"hello"}"#
            var answers: [(Int, String)] = []
            answers.append(try await request(port: apiPort, method: "POST", "/api/v1/sessions/s1/messages", headers: [("Authorization", "Bearer \(key)"), json],
                                             body: text, timeout: .seconds(60)))
            #expect(answers[0].0 == 200, "\(answers[0].1)")
            for (auth, path, body) in [("Bearer \(key)", "/api/v1/sessions/s1/messages?async=true", text),
                                       ("Bearer \(wrongKey)", "/api/v1/sessions/s1/messages?async=true", text),
                                       (key, "/api/v1/sessions/s1/messages?async=true", text),
                                       ("Bearer \(key)", "/api/v1/sessions/s1/messages?async=true", "{not json"),
                                       ("Bearer \(key)", "/api/v1/sessions/nobody/messages?async=true", text),
                                       ("Bearer \(adminToken)", "/api/v1/sessions/s1/messages?async=true", text),
                                       ("Bearer \(key)", "/api/v1/events/tickets", "")] {
                answers.append(try await request(port: apiPort, method: "POST", path, headers: [("Authorization", auth), json], body: body))
            }
            #expect(answers.map(\.0) == [200, 202, 401, 401, 400, 404, 401, 200], "\(answers)")
            // The ticket is in the answer that issued it, and nowhere else.
            if let ticket = (try? JSONSerialization.jsonObject(with: Data(answers.removeLast().1.utf8)) as? [String: Any])?["ticket"] as? String {
                secrets.append(ticket)
                _ = try await readStream(port: apiPort, path: "/api/v1/events?after=0&ticket=\(ticket)", timeout: .seconds(30)) { !$0.isEmpty }
            }
            let admin = "/admin/jobs"
            answers.append(try await request(port: adminPort, admin, headers: [("Authorization", "Bearer wrong-\(adminToken)")]))
            answers.append(try await request(port: adminPort, admin, headers: [("Authorization", "Bearer \(adminToken)")]))
            answers.append(try await request(port: adminPort, method: "POST", "/webhooks/wuzapi/s1", headers: [("x-hmac-signature", "00"), json], body: "{}"))
            answers.append(try await request(port: adminPort, method: "POST", "/webhooks/wuzapi/s1/\(webhookSecret)", headers: [json], body: "{}"))
            #expect(answers.suffix(4).map(\.0) == [401, 200, 401, 401], "\(answers.suffix(4))")
            seen += answers.map { ("an HTTP answer", $0.1) }
            let deadline = ContinuousClock.now + .seconds(120)
            while try await database.query("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'")[0].decode(Int.self, at: 0) < 2,
                  ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(100))
            }
            seen.append(("the API's /metrics", try await request(port: metricsPort, "/metrics").1))
            seen.append(("the worker's /metrics", try await request(port: adminPort, "/metrics").1))
            for id in 1...2 {
                seen.append(("jobs show", try await Subprocess.run(cli, ["jobs", "show", String(id), "--database-url", operatorURL]).output))
                seen.append(("jobs show --show-body", try await Subprocess.run(cli, ["jobs", "show", String(id), "--show-body", "--database-url", operatorURL]).output))
            }
            #expect(seen.last!.1.contains("hello"), "jobs show --show-body shows the body: \(seen.last!.1)")
            // A database that cannot be reached: the error names the server, never the password.
            let unreachable = RoleLogin(user: "nobody", password: "unreachablepass\(marker)", role: "").url("postgres://x@127.0.0.1:1/none")
            secrets.append("unreachablepass\(marker)")
            seen.append(("a CLI error", try await Subprocess.run(cli, ["jobs", "list", "--database-url", unreachable]).output))
            seen.append(("a migration that cannot connect", try await Subprocess.run(cli, ["migrate", "--status", "--database-url", unreachable]).output))
        } catch {
            Issue.record("\(error)")
        }
        for process in [api, worker] { process.signal(SIGTERM) }
        for process in [api, worker] { #expect(await process.exitStatus() == 0, "\(process.stderr.suffix(2_000))") }
        await simulator.stop()
        seen += [("the API's log", api.stderr), ("the worker's log", worker.stderr), ("the simulator's log", simulator.process.stderr)]
        #expect(api.stderr.contains("debug") || api.stderr.count > 200, "the API logged at debug level: \(api.stderr.prefix(500))")
        for (place, text) in seen {
            for secret in secrets where text.contains(secret) {
                Issue.record("\(place) shows a secret (\(secret.prefix(12))…): \(text.prefix(2_000))")
            }
        }
        await database.close()
    }
}
