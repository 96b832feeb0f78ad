import HTTPTypes
import Hummingbird
import OutboxCore
import Tracing

/// The trace context a job enqueued by a request continues.
///
/// With a tracer (`TracingMiddleware` has started the request's span), the request span's own
/// context: the dispatch becomes its child, in the caller's trace when the request carried a valid
/// `traceparent`. Without one (the default `NoOpTracer`), the request's `traceparent` and
/// `tracestate` as they came, if valid. A missing or malformed `traceparent` is ignored, never
/// refused: the job then starts a trace of its own (or none).
enum RequestTrace {
    static func forJob(_ request: Request) -> JobTraceContext? {
        if let current = InstrumentationContext.current {
            var carrier: [String: String] = [:]
            InstrumentationSystem.tracer.inject(current, into: &carrier, using: HeaderDictionaryInjector())
            if let context = JobTraceContext(traceParent: carrier["traceparent"], traceState: carrier["tracestate"]) { return context }
        }
        return JobTraceContext(traceParent: request.headers[.traceparent], traceState: request.headers[.tracestate])
    }
}

/// Writes a trace context into `[header name: value]`.
struct HeaderDictionaryInjector: Injector {
    func inject(_ value: String, forKey key: String, into carrier: inout [String: String]) {
        carrier[key.lowercased()] = value
    }
}

extension HTTPField.Name {
    static let traceparent = HTTPField.Name("traceparent")!
    static let tracestate = HTTPField.Name("tracestate")!
}
