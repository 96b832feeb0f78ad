import Foundation
import W3CTraceContext

/// The W3C trace context a job continues: a `traceparent` and an optional `tracestate`, as the
/// request that enqueued it carried them (or as the API's own request span made them). Kept with
/// the job (`jobs.trace_parent`, `jobs.trace_state`), so the worker's dispatch span joins that
/// trace. Only version `00` traceparents are kept, in their canonical lower-case form.
public struct JobTraceContext: Sendable, Equatable {
    public let traceParent: String
    public let traceState: String?

    /// The longest `tracestate` kept (W3C asks propagators to keep at least 512 characters).
    public static let maxTraceStateLength = 512

    /// Nil when `traceParent` is missing or not a valid W3C traceparent. A `tracestate` that is
    /// empty, malformed or longer than 512 characters is dropped, the traceparent kept.
    public init?(traceParent: String?, traceState: String? = nil) {
        guard let traceParent, let parsed = try? TraceContext(traceParentHeaderValue: traceParent.trimmingCharacters(in: .whitespaces)) else {
            return nil
        }
        self.traceParent = parsed.traceParentHeaderValue
        if let traceState, !traceState.isEmpty, traceState.count <= Self.maxTraceStateLength,
           (try? TraceContext(traceParentHeaderValue: self.traceParent, traceStateHeaderValue: traceState)) != nil {
            self.traceState = traceState
        } else {
            self.traceState = nil
        }
    }

    /// The trace id: 32 lower-case hex digits.
    public var traceID: String { String(traceParent.dropFirst(3).prefix(32)) }

    /// The span this context names, the parent of what continues it: 16 lower-case hex digits.
    public var spanID: String { String(traceParent.dropFirst(36).prefix(16)) }

    /// The context as the headers a tracer's `extract` reads.
    public var headers: [String: String] {
        var headers = ["traceparent": traceParent]
        if let traceState { headers["tracestate"] = traceState }
        return headers
    }
}
