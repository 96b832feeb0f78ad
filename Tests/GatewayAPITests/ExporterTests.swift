import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import OutboxStore
import PostgresClient
import Testing
import TestSupport

/// With an OTLP endpoint set, `wa-outbox api` and `wa-outbox worker` export their spans through
/// swift-otel, and the worker's dispatch span carries the trace the request brought.
@Suite("Tracing: the OpenTelemetry exporter")
struct ExporterTests {
    static let traceID = "4bf92f3577b34da6a3ce929d0e0e4736"

    @Test func bothProcessesExportTheRequestsTraceOverOTLP() async throws {
        let fixture = try await GatewayFixture.make()
        try await fixture.addSession("s1")
        let key = try await APIKeys.create(org: "org1", name: "otel", permissions: ["send"], in: fixture.database).key
        let collector = try await OTLPCollector.start()
        defer { collector.stop() }
        let port = try await Subprocess.run(URL(fileURLWithPath: "/bin/bash"),
                                            [TestEnvironment.repositoryRoot.appendingPathComponent("scripts/lib/servers.sh").path, "free-port"])
            .output.trimmingCharacters(in: .whitespacesAndNewlines)
        let environment = ProcessInfo.processInfo.environment.merging([
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "100", "WA_OUTBOX_LOG_LEVEL": "warning",
        ]) { $1 }
        let common = ["--database-url", fixture.url, "--redis-url", try TestEnvironment.redisURL()]
        let api = try Subprocess.launch(try TestEnvironment.executable(), ["api", "--listen", "127.0.0.1:\(port)", "--metrics-listen", "off"] + common,
                                        environment: environment)
        let worker = try Subprocess.launch(try TestEnvironment.executable(), ["worker", "--admin-listen", "off", "--poll-interval-ms", "100",
                                                                              "--rate-per-second", "1000", "--burst", "1000", "--pacing", "off"] + common,
                                           environment: environment)
        defer { api.terminate(); worker.terminate() }

        // Async: the job is dispatched whenever the worker gets to it; the spans are awaited below.
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/api/v1/sessions/s1/messages?async=true")
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(key)")
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "traceparent", value: "00-\(Self.traceID)-00f067aa0ba902b7-01")
        request.body = .bytes(ByteBuffer(string: #"{"type":"text","chat":"4915112345678@s.whatsapp.net","text":"exported-body 5521"}"#))
        var status: UInt = 0
        for _ in 0..<200 where status == 0 {  // until the API listens
            status = (try? await HTTPClient.shared.execute(request, timeout: .seconds(30)).status.code) ?? 0
            if status == 0 { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(status == 202)

        // Both spans arrive (bounded, generously for a loaded machine: an exporter that never sends fails the test).
        let trace = Data(hex: Self.traceID), incomingParent = Data(hex: "00f067aa0ba902b7")
        func spans() -> (request: Data?, dispatch: Data?) {
            let exports = collector.exports.filter { $0.range(of: trace) != nil }
            return (exports.first { $0.range(of: Data("/api/v1/sessions/{session}/messages".utf8)) != nil },
                    exports.first { $0.range(of: Data("wa_outbox.dispatch".utf8)) != nil })
        }
        for _ in 0..<1200 where spans().request == nil || spans().dispatch == nil { try await Task.sleep(for: .milliseconds(50)) }
        let (requestExport, dispatchExport) = spans()
        let requestSpan = try #require(requestExport, "the API exported no span of the request's trace")
        let dispatchSpan = try #require(dispatchExport, "the worker exported no dispatch span of the request's trace")
        #expect(requestSpan.range(of: incomingParent) != nil, "the request span's parent is the caller's span")
        #expect(requestSpan.range(of: Data("wa-outbox-api".utf8)) != nil && dispatchSpan.range(of: Data("wa-outbox-worker".utf8)) != nil)
        // The dispatch span's parent is the span the job row names: the API's request span.
        let stored = try await fixture.database.query("SELECT trace_parent FROM wa_outbox.jobs WHERE org = 'org1'")[0].decode(String.self, at: 0)
        #expect(dispatchSpan.range(of: Data(hex: String(stored.dropFirst(36).prefix(16)))) != nil)
        #expect(!collector.exports.contains { $0.range(of: Data("exported-body".utf8)) != nil }, "a message body was exported")
        await fixture.close()
    }
}

extension Data {
    /// Bytes from hex digits (test input only: even length, valid digits).
    init(hex: String) {
        var bytes: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            bytes.append(UInt8(hex[index..<next], radix: 16)!)
            index = next
        }
        self.init(bytes)
    }
}
