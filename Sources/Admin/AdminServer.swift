import Coordination
import Foundation
import HTTPSurface
import Hummingbird
import OutboxStore
import PostgresClient
import Prometheus
import Receipts
import RedisClient

/// The worker's admin port.
///
/// - `/healthz`: the process is alive.
/// - `/readyz`: PostgreSQL answers, the schema is the one this build expects, Redis answers (when
///   configured), and the process accepts work (`acceptsWork`: false once a worker shuts down). 503 with the failing checks otherwise.
/// - `/metrics`: Prometheus text format from the process's registry.
/// - `/admin/…`: the operator API (`AdminAPI`), behind the operator token.
/// - `/webhooks/…`: the engines' receipt webhooks (`ReceiptRoutes`), behind each engine's secret.
public enum AdminServer {
    public static func router(acceptsWork: @escaping @Sendable () -> Bool, database: PostgresDatabase, coordinator: Coordinator?,
                              registry: PrometheusCollectorRegistry, operatorToken: String?,
                              webhookSecrets: [ReceiptWebhook.Engine: String] = [:]) -> Router<BasicRequestContext> {
        let router = Router()
        // Before the routes: Hummingbird applies it to the routes added after it.
        router.add(middleware: APIErrorMiddleware())
        AdminAPI.register(on: router, database: database, token: operatorToken)
        ReceiptRoutes.register(on: router, database: database, secrets: webhookSecrets)
        router.get("/healthz") { _, _ in "ok\n" }
        router.get("/readyz") { _, _ -> Response in
            var failing: [String] = []
            do {
                let applied = try await SchemaVersion.applied(in: database)
                if applied < SchemaVersion.current {
                    failing.append("schema at migration \(applied), this build needs \(SchemaVersion.current): run wa-outbox migrate")
                }
            } catch {
                failing.append("postgres: \(error)")
            }
            if let coordinator {
                do {
                    _ = try await coordinator.redis.send("PING")
                } catch {
                    failing.append("redis: \(error)")
                }
            }
            if !acceptsWork() { failing.append("shutting down") }
            let body = failing.isEmpty ? "ready\n" : failing.joined(separator: "\n") + "\n"
            return Response(status: failing.isEmpty ? .ok : .serviceUnavailable, body: .init(byteBuffer: ByteBuffer(string: body)))
        }
        MetricsEndpoint.register(on: router, registry: registry)
        return router
    }
}
