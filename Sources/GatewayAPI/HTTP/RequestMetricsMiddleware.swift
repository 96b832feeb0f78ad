import HTTPTypes
import Hummingbird
import Metrics

/// Request counts and latencies of the gateway API, through swift-metrics (the `api` command
/// exports them at its `/metrics`).
///
/// - `wa_outbox_http_requests_total{method, route, status}`: one per answered request.
/// - `wa_outbox_http_request_duration_seconds{method, route, status_class}`: a histogram of the
///   time until the response's head is ready (for the event stream: until the stream opens).
///
/// Labels stay low-cardinality: `route` is the matched pattern (`/api/v1/sessions/{session}/messages`),
/// never the raw path, and `unmatched` for any path no route takes; `status_class` is `2xx` … `5xx`.
public struct RequestMetricsMiddleware<Context: RequestContext>: RouterMiddleware {
    public init() {}

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let started = ContinuousClock.now
        do {
            let response = try await next(request, context)
            RequestMetrics.record(request.method, route: context.endpointPath, status: Int(response.status.code), since: started)
            return response
        } catch {
            RequestMetrics.record(request.method, route: context.endpointPath, status: Int((error as? any HTTPResponseError)?.status.code ?? 500),
                                  since: started)
            throw error
        }
    }
}

/// The two request metrics, for the middleware and for answers given before a request was parsed.
enum RequestMetrics {
    static func record(_ method: HTTPRequest.Method, route: String?, status: Int, since started: ContinuousClock.Instant) {
        let elapsed = ContinuousClock.now - started
        let methodLabel = Self.methods.contains(method) ? method.rawValue : "OTHER"
        // Hummingbird names an unmatched path `NotFound`; a route's pattern starts with a slash.
        let routeLabel = route.flatMap { $0.hasPrefix("/") ? $0 : nil } ?? "unmatched"
        Counter(label: "wa_outbox_http_requests_total",
                dimensions: [("method", methodLabel), ("route", routeLabel), ("status", String(status))]).increment()
        Timer(label: "wa_outbox_http_request_duration_seconds",
              dimensions: [("method", methodLabel), ("route", routeLabel), ("status_class", "\(status / 100)xx")])
            .recordNanoseconds(elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000)
    }

    /// A request answered by the server before it was parsed (431): method `OTHER`, route `unmatched`.
    static func recordUnparsed(status: Int) {
        Counter(label: "wa_outbox_http_requests_total", dimensions: [("method", "OTHER"), ("route", "unmatched"), ("status", String(status))]).increment()
    }

    /// Methods named as they are; any other (a client may send any token) is `OTHER`.
    private static let methods: Set<HTTPRequest.Method> = [.get, .head, .post, .put, .patch, .delete, .options]
}
