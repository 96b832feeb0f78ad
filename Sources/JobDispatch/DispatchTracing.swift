import OutboxCore
import Tracing

/// The span of one dispatch, `wa_outbox.dispatch`: a child of the span the job's trace context
/// names (the API request that enqueued it, or the caller's own span before that), so the engine
/// call continues the request's trace. Its attributes name the job, never its body.
///
/// The tracer is the process's (`InstrumentationSystem.tracer`): a `NoOpTracer` unless the
/// executable bootstrapped an exporter, and then this costs a no-op span per dispatch.
enum DispatchTracing {
    static func withSpan(_ prepared: PreparedJob, _ operation: () async -> DispatchResult) async -> DispatchResult {
        let tracer = InstrumentationSystem.tracer
        var parent = InstrumentationContext.topLevel
        if let trace = prepared.job.trace {
            tracer.extract(trace.headers, into: &parent, using: HeaderDictionaryExtractor())
        }
        let job = prepared.job
        let span = tracer.startSpan("wa_outbox.dispatch", context: parent, ofKind: .consumer)
        // A no-op or sampled-out span records nothing: the hot path builds no attributes for it.
        guard span.isRecording else {
            defer { span.end() }
            return await InstrumentationContext.$current.withValue(span.context) { await operation() }
        }
        span.updateAttributes { attributes in
            attributes["wa_outbox.job.id"] = job.id
            attributes["wa_outbox.job.kind"] = job.kind.rawValue
            attributes["wa_outbox.job.attempt"] = job.attempt
            attributes["wa_outbox.session.id"] = job.sessionID
            attributes["wa_outbox.engine"] = prepared.context.engineName
        }
        let result = await InstrumentationContext.$current.withValue(span.context) { await operation() }
        span.updateAttributes { attributes in
            switch result.outcome {
            case .succeeded:
                attributes["wa_outbox.outcome"] = "succeeded"
            case .retry(_, let code, _):
                attributes["wa_outbox.outcome"] = "retry"
                attributes["wa_outbox.error.code"] = code.rawValue
            case .defer_(_, let code, _):
                attributes["wa_outbox.outcome"] = "deferred"
                attributes["wa_outbox.error.code"] = code.rawValue
            case .failed(let code, _):
                attributes["wa_outbox.outcome"] = "failed"
                attributes["wa_outbox.error.code"] = code.rawValue
            }
        }
        switch result.outcome {
        case .failed, .retry: span.setStatus(SpanStatus(code: .error))
        case .succeeded, .defer_: break
        }
        span.end()
        return result
    }
}

/// Reads a trace context from `[header name: value]` (`JobTraceContext.headers`).
struct HeaderDictionaryExtractor: Extractor {
    func extract(key: String, from carrier: [String: String]) -> String? {
        carrier[key.lowercased()]
    }
}
