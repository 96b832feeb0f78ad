import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import OutboxCore
import OutboxStore
import Testing
import TestSupport

@Suite("The worker's admin port")
struct AdminTests {
    func get(_ url: String) async throws -> (UInt, String) {
        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(5))
        let body = try await response.body.collect(upTo: 4 << 20)
        return (response.status.code, String(buffer: body))
    }

    func call(_ method: String, _ url: String, token: String, body: String? = nil) async throws -> (UInt, String) {
        var request = HTTPClientRequest(url: url)
        request.method = HTTPMethod(rawValue: method)
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: body))
        }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        return (response.status.code, String(buffer: try await response.body.collect(upTo: 4 << 20)))
    }

    @Test func metricsParseWithPrometheusParserAndAgreeWithTheDatabase() async throws {
        let fixture = try await Fixture.make()
        let simulator = try await HTTPSimulator.start()
        try await fixture.addSessions(["ok1", "ok2", "banned"], engine: "wuzapi", url: simulator.baseURL)
        try await simulator.setStatus("unauthorized", session: "banned")
        try await fixture.enqueueTexts(count: 300, sessions: ["ok1", "ok2", "banned"], chatsPerSession: 5)
        let port = try await Subprocess.run(URL(fileURLWithPath: "/bin/bash"),
                                            [TestEnvironment.repositoryRoot.appendingPathComponent("scripts/lib/servers.sh").path, "free-port"])
            .output.trimmingCharacters(in: .whitespacesAndNewlines)
        let admin = "http://127.0.0.1:\(port)"
        let worker = try OutboxProcess(["worker", "--database-url", fixture.url, "--admin-listen", "127.0.0.1:\(port)", "--poll-interval-ms", "100",
                                        "--rate-per-second", "100000", "--burst", "100000", "--pacing", "off"],
                                       environment: ["WA_OUTBOX_ADMIN_TOKEN": "s3cret-operator-token"])
        while try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state IN ('succeeded', 'failed')") < 300 {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(try await get(admin + "/healthz").0 == 200)
        #expect(try await get(admin + "/readyz") == (200, "ready\n"))
        let (status, text) = try await get(admin + "/metrics")
        #expect(status == 200)

        let samples = try await PrometheusSamples.parse(text)
        let succeeded = try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'")
        let failed = try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'failed' AND error_code = 'engine_error'")
        #expect(succeeded == 200)
        #expect(failed == 100)
        #expect(samples["wa_outbox_jobs_total{kind=send,outcome=succeeded}"] == Double(succeeded))
        #expect(samples["wa_outbox_jobs_total{kind=send,outcome=failed}"] == Double(failed))
        #expect(samples["wa_outbox_dispatch_duration_seconds_count{engine=wuzapi}"] == Double(succeeded + failed))
        // The demand autoscalers follow (docs/operations.md), read with the queue gauges when the worker started.
        #expect(samples["wa_outbox_runnable_demand{}"] != nil && samples["wa_outbox_dispatch_demand{}"] != nil)
        // No high-cardinality label anywhere: no session, chat, org or job id.
        #expect(!samples.keys.contains { $0.contains("ok1") || $0.contains("banned") || $0.contains("whatsapp.net") || $0.contains("org1") })

        // The operator API: refused without the right token; with it, the same operations as the CLI.
        #expect(try await get(admin + "/admin/stats").0 == 401)
        #expect(try await call("GET", admin + "/admin/stats", token: "s3cret-operator-tokeN").0 == 401)
        let (statsStatus, statsBody) = try await call("GET", admin + "/admin/stats", token: "s3cret-operator-token")
        #expect(statsStatus == 200)
        #expect(statsBody.contains(#""failed":100"#))
        let (listStatus, listBody) = try await call("GET", admin + "/admin/jobs?state=failed&session=banned&limit=500", token: "s3cret-operator-token")
        #expect(listStatus == 200)
        #expect(try JSONSerialization.jsonObject(with: Data(listBody.utf8)) as? [Any] != nil)
        #expect((try JSONSerialization.jsonObject(with: Data(listBody.utf8)) as? [Any])?.count == 100)
        let dryRun = try await call("POST", admin + "/admin/jobs/replay", token: "s3cret-operator-token",
                                    body: #"{"state":["failed"],"session":"banned","reason":"unbanned","dryRun":true}"#)
        #expect(dryRun.0 == 200)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'failed'") == 100)
        try await simulator.setStatus("connected", session: "banned")
        let replay = try await call("POST", admin + "/admin/jobs/replay", token: "s3cret-operator-token",
                                    body: #"{"state":["failed"],"session":"banned","reason":"unbanned"}"#)
        #expect(replay.0 == 200)
        while try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'") < 300 {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.audit WHERE actor = 'admin-api' AND reason = 'unbanned'") == 100)

        worker.signal(SIGTERM)
        #expect(await worker.exitStatus() == 0)
        await simulator.stop()
        await fixture.close()
    }

    /// The error envelope every HTTP surface answers with: `{"error":{"code","message","details"}}`.
    struct ErrorBody: Decodable {
        struct Content: Decodable {
            var code: String
            var message: String
            var details: [String: String]
        }
        var error: Content
    }

    func errorBody(_ answer: (UInt, String)) throws -> ErrorBody {
        do {
            return try JSONDecoder().decode(ErrorBody.self, from: Data(answer.1.utf8))
        } catch {
            Issue.record("not the error envelope (status \(answer.0)): \(answer.1)")
            throw error
        }
    }

    @Test func errorsAnswerWithOneEnvelopeAndStableCodes() async throws {
        let fixture = try await Fixture.make()
        let token = "s3cret-operator-token"
        // A free port can be taken by another test's server before the worker binds it (CI once
        // got that server's 404s): the worker then exits, and the test tries another port.
        var admin = ""
        var started: OutboxProcess?
        for _ in 0..<5 where started == nil {
            let port = try await Subprocess.run(URL(fileURLWithPath: "/bin/bash"),
                                                [TestEnvironment.repositoryRoot.appendingPathComponent("scripts/lib/servers.sh").path, "free-port"])
                .output.trimmingCharacters(in: .whitespacesAndNewlines)
            admin = "http://127.0.0.1:\(port)"
            let candidate = try OutboxProcess(["worker", "--database-url", fixture.url, "--admin-listen", "127.0.0.1:\(port)", "--poll-interval-ms", "100"],
                                              environment: ["WA_OUTBOX_ADMIN_TOKEN": token, "WA_OUTBOX_WUZAPI_WEBHOOK_SECRET": "hook-secret"])
            for _ in 0..<400 where candidate.process.isRunning {
                if (try? await get(admin + "/healthz"))?.0 == 200 { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            if candidate.process.isRunning { started = candidate }
        }
        let worker = try #require(started, "no worker could bind a free admin port")

        let unauthorized = try await get(admin + "/admin/stats")
        #expect(unauthorized.0 == 401)
        let wrongToken = try errorBody(try await call("GET", admin + "/admin/stats", token: token + "x"))
        #expect(wrongToken.error.code == "unauthorized")
        #expect(wrongToken.error.message == "missing or wrong operator token")
        #expect(try errorBody(unauthorized).error.code == "unauthorized")

        let missing = try await call("GET", admin + "/admin/jobs/987654321", token: token)
        #expect(missing.0 == 404)
        #expect(try errorBody(missing).error.code == "not_found")
        #expect(try errorBody(missing).error.message == "no such job")

        let unnamed = try await call("POST", admin + "/admin/jobs/replay", token: token, body: #"{"reason":"why not"}"#)
        #expect(unnamed.0 == 400)
        #expect(try errorBody(unnamed).error.code == "validation_error")
        #expect(try errorBody(unnamed).error.message == "name the jobs: ids, state, org, session, chat, kind or errorCode")

        let badState = try await call("GET", admin + "/admin/jobs?state=sleeping", token: token)
        #expect(badState.0 == 400)
        #expect(try errorBody(badState).error.message == "unknown state sleeping")

        // A body that is not JSON: the framework's decoding error, in the same envelope.
        let malformed = try await call("POST", admin + "/admin/jobs/cancel", token: token, body: "{not json")
        #expect(malformed.0 == 400)
        #expect(try errorBody(malformed).error.code == "validation_error")

        let noRoute = try await call("GET", admin + "/admin/no-such-thing", token: token)
        #expect(noRoute.0 == 404)
        #expect(try errorBody(noRoute).error.code == "not_found")

        var unsigned = HTTPClientRequest(url: admin + "/webhooks/wuzapi/s1")
        unsigned.method = .POST
        unsigned.body = .bytes(ByteBuffer(string: #"{"type":"ReadReceipt"}"#))
        let response = try await HTTPClient.shared.execute(unsigned, timeout: .seconds(10))
        let webhook = (response.status.code, String(buffer: try await response.body.collect(upTo: 1 << 20)))
        #expect(webhook.0 == 401)
        #expect(try errorBody(webhook).error.code == "unauthorized")
        #expect(try errorBody(webhook).error.message == "missing or wrong webhook signature")

        worker.signal(SIGTERM)
        #expect(await worker.exitStatus() == 0)
        await fixture.close()
    }

    @Test func readinessFollowsRedisDownAndBackUp() async throws {
        let redis = try await PrivateServer.start(.redis)
        let fixture = try await Fixture.make()
        let port = try await Subprocess.run(URL(fileURLWithPath: "/bin/bash"),
                                            [TestEnvironment.repositoryRoot.appendingPathComponent("scripts/lib/servers.sh").path, "free-port"])
            .output.trimmingCharacters(in: .whitespacesAndNewlines)
        let readyz = "http://127.0.0.1:\(port)/readyz"
        let worker = try OutboxProcess(["worker", "--database-url", fixture.url, "--redis-url", redis.url,
                                        "--admin-listen", "127.0.0.1:\(port)", "--poll-interval-ms", "100"])
        /// Polls until the answer's status is `status` (or 20 s pass); returns the last answer.
        func waitFor(_ status: UInt) async -> (UInt, String) {
            var last: (UInt, String) = (0, "")
            let deadline = ContinuousClock.now + .seconds(20)
            while ContinuousClock.now < deadline {
                if let answer = try? await get(readyz) {
                    last = answer
                    if answer.0 == status { break }
                }
                try? await Task.sleep(for: .milliseconds(100))
            }
            return last
        }
        #expect(await waitFor(200) == (200, "ready\n"))
        try await redis.stop()
        let down = await waitFor(503)
        #expect(down.0 == 503)
        #expect(down.1.hasPrefix("redis:"), "\(down.1)")
        try await redis.start()
        let back = ContinuousClock.now
        #expect(await waitFor(200) == (200, "ready\n"))
        #expect(ContinuousClock.now - back < .seconds(10))

        worker.signal(SIGTERM)
        #expect(await worker.exitStatus() == 0)
        await fixture.close()
        await redis.destroy()
    }
}
