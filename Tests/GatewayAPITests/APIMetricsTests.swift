import AsyncHTTPClient
import Foundation
import GatewayAPI
import NIOCore
import NIOHTTP1
import OutboxStore
import Testing
import TestSupport

/// `wa-outbox api` counts its requests and their latencies at its `/metrics`, labelled by method,
/// route pattern and status: checked with Prometheus' own parser against the requests made.
@Suite("Gateway API: request metrics")
struct APIMetricsTests {
    func call(_ method: HTTPMethod, _ url: String, key: String?, body: String? = nil, extra: [(String, String)] = []) async throws -> (UInt, String) {
        var request = HTTPClientRequest(url: url)
        request.method = method
        if let key { request.headers.add(name: "Authorization", value: "Bearer \(key)") }
        for (name, value) in extra { request.headers.add(name: name, value: value) }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: body))
        }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        return (response.status.code, String(buffer: try await response.body.collect(upTo: 4 << 20)))
    }

    func freePort() async throws -> String {
        try await Subprocess.run(URL(fileURLWithPath: "/bin/bash"),
                                 [TestEnvironment.repositoryRoot.appendingPathComponent("scripts/lib/servers.sh").path, "free-port"])
            .output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test func requestCountsAndLatenciesAreExportedWithRoutePatterns() async throws {
        let fixture = try await GatewayFixture.make()
        try await fixture.addSession("s1")
        let key = try await APIKeys.create(org: "org1", name: "metrics", permissions: ["send", "read"], in: fixture.database).key
        let (apiPort, metricsPort) = (try await freePort(), try await freePort())
        try #require(apiPort != metricsPort)
        let process = try Subprocess.launch(try TestEnvironment.executable(), [
            "api", "--database-url", fixture.url, "--redis-url", try TestEnvironment.redisURL(),
            "--listen", "127.0.0.1:\(apiPort)", "--metrics-listen", "127.0.0.1:\(metricsPort)",
        ], environment: ProcessInfo.processInfo.environment.merging(["WA_OUTBOX_LOG_LEVEL": "warning"]) { $1 })
        defer { process.terminate() }
        let (api, metrics) = ("http://127.0.0.1:\(apiPort)", "http://127.0.0.1:\(metricsPort)")
        // Started when both ports answer (bounded: a process that never listens fails the test).
        var ready = false
        for _ in 0..<300 where !ready {
            let apiUp = (try? await call(.GET, api + "/healthz", key: nil).0) == 200
            let metricsUp = (try? await call(.GET, metrics + "/healthz", key: nil).0) == 200
            ready = apiUp && metricsUp
            if !ready { try await Task.sleep(for: .milliseconds(50)) }
        }
        try #require(ready, "wa-outbox api did not start")

        let text = #"{"type":"text","chat":"4915112345678@s.whatsapp.net","text":"hello"}"#
        var ids: [String] = []
        for _ in 0..<3 {
            let (status, body) = try await call(.POST, api + "/api/v1/sessions/s1/messages?async=true", key: key, body: text)
            #expect(status == 202)
            ids.append(try JSONDecoder().decode(SendResultID.self, from: Data(body.utf8)).outboxId)
        }
        for id in ids.prefix(2) { #expect(try await call(.GET, api + "/api/v1/messages/\(id)", key: key).0 == 200) }
        #expect(try await call(.POST, api + "/api/v1/sessions/s1/messages?async=true", key: nil, body: text).0 == 401)
        #expect(try await call(.GET, api + "/no/such/path/\(ids[0])", key: key).0 == 404)
        #expect(try await call(.GET, api + "/no/other/path", key: key).0 == 404)
        #expect(try await call(.GET, api + "/healthz", key: nil,
                               extra: [("X-Padding", String(repeating: "a", count: HeaderLimits.maxBytes + 1))]).0 == 431)

        let (status, exposition) = try await call(.GET, metrics + "/metrics", key: nil)
        #expect(status == 200)
        let samples = try await PrometheusSamples.parse(exposition)
        let send = "route=/api/v1/sessions/{session}/messages"
        let show = "route=/api/v1/messages/{outboxId}"
        #expect(samples["wa_outbox_http_requests_total{method=POST,\(send),status=202}"] == 3)
        #expect(samples["wa_outbox_http_requests_total{method=POST,\(send),status=401}"] == 1)
        #expect(samples["wa_outbox_http_requests_total{method=GET,\(show),status=200}"] == 2)
        #expect(samples["wa_outbox_http_requests_total{method=GET,route=unmatched,status=404}"] == 2)
        #expect(samples["wa_outbox_http_requests_total{method=OTHER,route=unmatched,status=431}"] == 1)
        #expect(samples["wa_outbox_http_request_duration_seconds_count{method=POST,\(send),status_class=2xx}"] == 3)
        #expect(samples["wa_outbox_http_request_duration_seconds_count{method=GET,\(show),status_class=2xx}"] == 2)
        #expect((samples["wa_outbox_http_request_duration_seconds_sum{method=POST,\(send),status_class=2xx}"] ?? 0) > 0)
        // Route patterns only: no session, message id or unmatched path in a label.
        #expect(!samples.keys.contains { $0.contains("s1/") || $0.contains("/no/") || $0.range(of: #"messages/\d"#, options: .regularExpression) != nil })
        await fixture.close()
    }
}

private struct SendResultID: Decodable {
    var outboxId: String
}
