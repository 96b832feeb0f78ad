import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import OutboxCore
import OutboxStore
import PostgresClient
import Testing
import TestSupport
import Tracing

/// A request's W3C `traceparent` is kept with its job, and the worker's dispatch continues it.
@Suite("Gateway API: trace context")
struct TraceContextTests {
    static let body = #"{"type":"text","chat":"4915112345678@s.whatsapp.net","text":"trace-me-not 7731"}"#
    static let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    func send(_ client: some TestClientProtocol, _ extra: [String: String], async: Bool = false) async throws -> TestResponse {
        try await client.execute(uri: "/api/v1/sessions/s1/messages\(async ? "?async=true" : "")", method: .post,
                                 headers: headers(extra), body: ByteBuffer(string: Self.body))
    }

    func stored(_ fixture: GatewayFixture, _ response: TestResponse) async throws -> (parent: String?, state: String?) {
        let id = try #require(Int64(try sendResult(response).outboxId))
        let row = try await fixture.database.query("SELECT trace_parent, trace_state FROM wa_outbox.jobs WHERE id = \(id) AND org = 'org1'")[0]
        return (try row.decode(String?.self, at: 0), try row.decode(String?.self, at: 1))
    }

    func dispatchSpan(_ tracer: RecordingTracer, job response: TestResponse) throws -> RecordingSpan {
        let id = try #require(Int64(try sendResult(response).outboxId))
        return try #require(tracer.spans(named: "wa_outbox.dispatch").first { $0.attributes["wa_outbox.job.id"]?.toSpanAttribute() == .int64(id) })
    }

    @Test func theDispatchSpanContinuesTheRequestsTraceThroughTheJobRow() async throws {
        let tracer = RecordingTracer()
        let fixture = try await GatewayFixture.make()
        try await fixture.addSession("s1")
        let app = Application(router: fixture.router())
        try await withTracer(tracer) {
            try await fixture.withWorker {
                try await app.test(.live) { client in
                    let response = try await send(client, ["traceparent": Self.incoming, "tracestate": "vendor=abc"])
                    #expect(response.status == .ok)
                    // The job row holds the trace: the caller's trace id, and as parent the API's request span.
                    let (parent, state) = try await stored(fixture, response)
                    let kept = try #require(JobTraceContext(traceParent: parent))
                    #expect(kept.traceID == "4bf92f3577b34da6a3ce929d0e0e4736")
                    let request = try #require(tracer.spans.first { $0.spanID == kept.spanID })
                    #expect(request.traceID == kept.traceID)
                    #expect(request.parentSpanID == "00f067aa0ba902b7")
                    #expect(state == nil, "this tracer injects no tracestate")
                    // The worker's dispatch span: same trace, child of the span the row names.
                    let dispatch = try dispatchSpan(tracer, job: response)
                    #expect(dispatch.traceID == "4bf92f3577b34da6a3ce929d0e0e4736")
                    #expect(dispatch.parentSpanID == kept.spanID)
                    #expect(!dispatch.isRecording)
                    #expect(dispatch.attributes["wa_outbox.job.kind"]?.toSpanAttribute() == .string("send"))
                    #expect(dispatch.attributes["wa_outbox.session.id"]?.toSpanAttribute() == .string("s1"))
                    #expect(dispatch.attributes["wa_outbox.outcome"]?.toSpanAttribute() == .string("succeeded"))
                    var values: [String] = []
                    dispatch.attributes.forEach { _, value in values.append("\(value)") }
                    #expect(!values.contains { $0.contains("trace-me-not") }, "the message body is in a span attribute")

                    // Without a traceparent, or with a malformed one: answered as usual; the job
                    // continues the request span, which starts a trace of its own.
                    for extra in [[:], ["traceparent": "00-not-a-trace-01"], ["traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01"]] {
                        let other = try await send(client, extra)
                        #expect(other.status == .ok, "\(extra)")
                        let kept = try #require(JobTraceContext(traceParent: try await stored(fixture, other).parent))
                        #expect(kept.traceID != "4bf92f3577b34da6a3ce929d0e0e4736")
                        let request = try #require(tracer.spans.first { $0.spanID == kept.spanID })
                        #expect(request.parentSpanID == nil)
                        let dispatch = try dispatchSpan(tracer, job: other)
                        #expect(dispatch.traceID == kept.traceID && dispatch.parentSpanID == kept.spanID)
                    }
                }
            }
        }
        await fixture.close()
    }

    @Test func withoutATracerTheRequestsOwnTraceparentIsKeptAndAMalformedOneIgnored() async throws {
        let fixture = try await GatewayFixture.make()
        try await fixture.addSession("s1")
        let app = Application(router: fixture.router())
        try await app.test(.live) { client in
            let kept = try await send(client, ["traceparent": Self.incoming, "tracestate": "vendor=abc,other=x"], async: true)
            #expect(kept.status == .accepted)
            let row = try await stored(fixture, kept)
            #expect(row.parent == Self.incoming)
            #expect(row.state == "vendor=abc,other=x")
            for bad in ["garbage", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                        Self.incoming + "-extra", "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01"] {
                let response = try await send(client, ["traceparent": bad, "tracestate": "vendor=abc"], async: true)
                #expect(response.status == .accepted, "\(bad)")
                let row = try await stored(fixture, response)
                #expect(row.parent == nil && row.state == nil, "\(bad)")
            }
            let plain = try await send(client, [:], async: true)
            #expect(plain.status == .accepted)
            let plainRow = try await stored(fixture, plain)
            #expect(plainRow.parent == nil && plainRow.state == nil)
        }
        // A caller of wa_outbox.enqueue from SQL gets the same check, as a validation error.
        do {
            _ = try await fixture.database.query("""
                SELECT * FROM wa_outbox.enqueue(\("org1"), \("s1"), \("send"), \(PostgresJSONB(Self.body)), NULL, now(), \("00-zz-00f067aa0ba902b7-01"))
                """)
            Issue.record("enqueue accepted a malformed trace_parent")
        } catch let error as PostgresError {
            #expect(error.sqlState == "WA400")
        }
        await fixture.close()
    }
}
