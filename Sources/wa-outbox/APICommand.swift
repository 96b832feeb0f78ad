import Admin
import ArgumentParser
import Console
import Coordination
import Foundation
import GatewayAPI
import JobDispatch
import Hummingbird
import Logging
import Metrics
import NIOCore
import OutboxCore
import PostgresClient
import Prometheus
import RedisClient
import ServiceLifecycle
import UnixSignals
import Worker

struct APICommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "api",
        abstract: "Serve the gateway's HTTP API: send, edit and revoke messages, and stream their message.status events."
    )

    static let defaultListen = "127.0.0.1:8080"

    @OptionGroup var database: DatabaseOptions
    @OptionGroup var limits: LimitOptions
    @Option(help: "HOST:PORT to listen on (env: WA_OUTBOX_API_LISTEN; default \(Self.defaultListen)).") var listen: String?
    @Option(name: .customLong("redis-url"), help: "Redis for rate limits and idempotency locks (env: REDIS_URL). Required unless --no-limits.")
    var redisURL: String?
    @Flag(name: .customLong("no-limits"), help: "Run without Redis: no 429 and no idempotency lock (the unique key still holds). Never in production.")
    var noLimits = false
    @Option(name: .customLong("redis-prefix"), help: "Prefix of every Redis key; the workers' (env: WA_OUTBOX_REDIS_PREFIX; default wa-outbox).")
    var redisPrefix: String?
    @Option(name: .customLong("sync-timeout-ms"), help: "How long a synchronous request waits for WhatsApp before it answers 202 with the job still running (env: WA_OUTBOX_SYNC_TIMEOUT_MS; default 25000).")
    var syncTimeoutMilliseconds: Int?
    @Option(name: .customLong("metrics-listen"), help: "HOST:PORT for /metrics (request counts and latencies) and /healthz; 'off' to disable (env: WA_OUTBOX_API_METRICS_LISTEN; default \(Self.defaultMetricsListen)).")
    var metricsListen: String?
    @Option(name: .customLong("request-timeout-ms"), help: "Engine request timeout of the synchronous sends this process dispatches (env: WA_OUTBOX_REQUEST_TIMEOUT_MS; default 30000).")
    var requestTimeoutMilliseconds: Int?
    @Option(name: .customLong("lease-ms"), help: "Lease on the synchronous sends this process dispatches, as a worker's (env: WA_OUTBOX_LEASE_MS; default \(WorkerCommand.defaults.lease.milliseconds)).")
    var leaseMilliseconds: Int?
    @OptionGroup var tracing: TracingOptions

    static let defaultMetricsListen = "127.0.0.1:9465"

    func run() async throws {
        let logger = makeLogger("wa-outbox.api")
        let address = setting(listen, "WA_OUTBOX_API_LISTEN", Self.defaultListen)
        let parts = address.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1]) else { throw ValidationError("--listen takes HOST:PORT") }
        let db = try database.database(connections: 16, logger: logger)
        let defaults = WorkerCommand.defaults
        let requestTimeout = Duration.milliseconds(setting(requestTimeoutMilliseconds, "WA_OUTBOX_REQUEST_TIMEOUT_MS", Int(defaults.requestTimeout.milliseconds)))
        let lease = Duration.milliseconds(setting(leaseMilliseconds, "WA_OUTBOX_LEASE_MS", Int(defaults.lease.milliseconds)))
        guard lease >= .milliseconds(300) else { throw ValidationError("the lease must be at least 300 ms") }
        var coordinator: Coordinator?
        if let url = redisURL ?? environment["REDIS_URL"], !url.isEmpty, !noLimits {
            // A dispatch lock must outlive the longest dispatch, as a worker's; the lease keeper renews it.
            coordinator = Coordinator(redis: RedisDatabase(configuration: try RedisConfiguration(url: url), maxConnections: 8, logger: logger),
                                      prefix: setting(redisPrefix, "WA_OUTBOX_REDIS_PREFIX", "wa-outbox"),
                                      lockTTL: requestTimeout + .seconds(5), logger: logger)
        } else if !noLimits {
            throw ValidationError("REDIS_URL is not set: without Redis a synchronous send cannot be refused over its rate and concurrent retries of one Idempotency-Key are not serialized. Set REDIS_URL or --redis-url (--no-limits only for trials).")
        }
        let hub = EventHub(database: db, listenerConfiguration: try database.configuration(), logger: logger)
        let authentication = try GatewayAuthConfiguration.fromEnvironment()
        // Engine servers only: an engine inside a process (the simulator's `sim`) is the workers'.
        let direct = DirectDispatch(
            name: "api-\(ProcessInfo.processInfo.hostName)-\(ProcessInfo.processInfo.processIdentifier)", database: db,
            engines: EngineDirectory(database: db, engines: EngineDirectory.httpEngines(requestTimeout: requestTimeout), defaultLimits: limits.defaults),
            coordinator: coordinator, retry: defaults.retry, lease: lease, requestTimeout: requestTimeout, logger: logger)
        let dependencies = GatewayDependencies(
            database: db, coordinator: coordinator, jobEvents: hub,
            syncTimeout: .milliseconds(setting(syncTimeoutMilliseconds, "WA_OUTBOX_SYNC_TIMEOUT_MS", 25_000)),
            defaultLimits: limits.defaults, logger: logger,
            events: EventRoutes(hub: hub, tickets: try StreamTickets.fromEnvironment()), direct: direct)
        let metrics = try AdminAddress(setting(metricsListen, "WA_OUTBOX_API_METRICS_LISTEN", Self.defaultMetricsListen), option: "--metrics-listen")
        // The exporter first: the group stops its services in reverse order, so it flushes the last spans.
        var services = try tracing.bootstrap(serviceName: "wa-outbox-api", logger: logger).map { [$0] } ?? []
        if let metrics {
            let registry = PrometheusCollectorRegistry()
            MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
            let application = Application(router: MetricsEndpoint.router(registry: registry),
                                          configuration: .init(address: .hostname(metrics.host, port: metrics.port)), logger: logger)
            services.append(.init(service: ListeningService(application: application, address: "\(metrics)", option: "--metrics-listen")))
        }
        let router = Gateway.router(dependencies, authenticate: Authenticator(configuration: authentication, database: db, logger: logger))
        Console(database: db, adminToken: environment["WA_OUTBOX_ADMIN_TOKEN"], logger: logger).register(on: router)
        let application = Application(router: router, server: HeaderLimits.server,
                                      configuration: .init(address: .hostname(String(parts[0]), port: port)), logger: logger)
        // Stopped in reverse order: the listener first, then the dispatches it started, then the hub.
        services += [.init(service: hub), .init(service: DirectDispatchService(direct: direct, grace: defaults.gracePeriod)),
                     .init(service: ListeningService(application: application, address: address, option: "--listen"))]
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(
            services: services,
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        ))
        try await group.run()
        await db.close()
    }
}

/// The API's own dispatch of synchronous sends as a lifecycle service: its lease until a graceful
/// shutdown, then the dispatches under way get `grace` to finish.
struct DirectDispatchService: Service {
    let direct: DirectDispatch
    let grace: Duration

    func run() async throws {
        await cancelWhenGracefulShutdown { await direct.keepLease() }
        await direct.finish(by: .now + grace)
    }
}
