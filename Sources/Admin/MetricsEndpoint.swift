import Hummingbird
import Prometheus

/// `/metrics`: the process's Prometheus registry in the text format. The worker's admin port and
/// the API's metrics port serve it alike.
public enum MetricsEndpoint {
    public static func register<Context: RequestContext>(on router: Router<Context>, registry: PrometheusCollectorRegistry) {
        router.get("/metrics") { _, _ -> Response in
            var response = Response(status: .ok, body: .init(byteBuffer: ByteBuffer(bytes: registry.emitToBuffer())))
            response.headers[.contentType] = "text/plain; version=0.0.4"
            return response
        }
    }

    /// A router with `/healthz` and `/metrics` only: the API process's metrics port.
    public static func router(registry: PrometheusCollectorRegistry) -> Router<BasicRequestContext> {
        let router = Router()
        router.get("/healthz") { _, _ in "ok\n" }
        register(on: router, registry: registry)
        return router
    }
}
