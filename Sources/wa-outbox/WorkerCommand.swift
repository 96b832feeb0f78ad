import ArgumentParser
import Admin
import Console
import Coordination
import Hummingbird
import Metrics
import Prometheus
import Receipts
import Engines
import Foundation
import Logging
import OutboxCore
import PostgresClient
import RedisClient
import ServiceLifecycle
import UnixSignals
import JobDispatch
import NIOCore
import Simulator
import Worker

struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Claim queued jobs and dispatch them to their sessions' engines until stopped (SIGTERM/SIGINT)."
    )

    /// The one table of defaults: every option falls back to it.
    static let defaults = WorkerConfiguration(name: "")

    @OptionGroup var database: DatabaseOptions
    @OptionGroup var simulator: SimulatorOptions

    @Option(help: "Name shown in `wa_outbox.workers` (env: WA_OUTBOX_WORKER_NAME).") var name: String?
    @Option(help: "Claimed jobs held in this process, at most that many dispatches in flight (env: WA_OUTBOX_CONCURRENCY; default \(Self.defaults.concurrency)).") var concurrency: Int?
    @Option(name: .customLong("batch-size"), help: "Jobs per claim (env: WA_OUTBOX_BATCH_SIZE; default \(Self.defaults.batchSize)).") var batchSize: Int?
    @Option(name: .customLong("lease-ms"), help: "Lease on a worker's jobs; heartbeats every third (env: WA_OUTBOX_LEASE_MS; default \(Self.defaults.lease.milliseconds)).") var leaseMilliseconds: Int?
    @Option(name: .customLong("poll-interval-ms"), help: "Fallback poll when no NOTIFY comes (env: WA_OUTBOX_POLL_INTERVAL_MS; default \(Self.defaults.pollInterval.milliseconds)).") var pollMilliseconds: Int?
    @Option(name: .customLong("grace-ms"), help: "Time in-flight dispatches get on shutdown (env: WA_OUTBOX_GRACE_MS; default \(Self.defaults.gracePeriod.milliseconds)).") var graceMilliseconds: Int?
    @Option(name: .customLong("retry-base-ms"), help: "First retry delay; doubles per attempt (env: WA_OUTBOX_RETRY_BASE_MS; default \(Self.defaults.retry.base.milliseconds)).") var retryBaseMilliseconds: Int?
    @Option(name: .customLong("retry-cap-ms"), help: "Longest retry delay (env: WA_OUTBOX_RETRY_CAP_MS; default \(Self.defaults.retry.cap.milliseconds)).") var retryCapMilliseconds: Int?
    @Option(name: .customLong("request-timeout-ms"), help: "Engine request timeout (env: WA_OUTBOX_REQUEST_TIMEOUT_MS; default 30000).") var requestTimeoutMilliseconds: Int?
    @Option(name: .customLong("sim-delivery-log"), help: "Delivery log of the in-process simulator (sessions with engine sim).") var simDeliveryLog: String?
    @Flag(name: .customLong("exit-when-idle"), help: "Drain the queue, then exit.") var exitWhenIdle = false
    @OptionGroup var limits: LimitOptions
    @OptionGroup var retention: RetentionOptions
    @OptionGroup var tracing: TracingOptions
    @Option(name: .customLong("admin-listen"), help: "HOST:PORT for /healthz, /readyz and /metrics; 'off' to disable (env: WA_OUTBOX_ADMIN_LISTEN; default \(AdminAddress.default)).")
    var adminListen: String?
    @Option(name: .customLong("prune-interval-ms"), help: "How often to prune finished work; 0: never (env: WA_OUTBOX_PRUNE_INTERVAL_MS; default \(Self.defaults.pruneInterval?.milliseconds ?? 0)).")
    var pruneIntervalMilliseconds: Int?
    @Option(name: .customLong("health-interval-ms"), help: "How often each session's engine is asked whether it is connected, across all workers (env: WA_OUTBOX_HEALTH_INTERVAL_MS; default \(Self.defaults.healthInterval.milliseconds)).")
    var healthIntervalMilliseconds: Int?

    @Option(name: .customLong("redis-url"), help: "Redis for shared limits and dispatch locks (env: REDIS_URL). Required unless --no-limits.")
    var redisURL: String?
    @Flag(name: .customLong("no-limits"), help: "Run without Redis: no rate limit, pacing, budget or dispatch lock (benchmarks, the simulator). Never for real numbers.")
    var noLimits = false
    @Option(name: .customLong("redis-prefix"), help: "Prefix of every Redis key (env: WA_OUTBOX_REDIS_PREFIX; default wa-outbox).")
    var redisPrefix: String?

    func run() async throws {
        let logger = makeLogger("wa-outbox.worker")
        let defaults = Self.defaults
        var configuration = WorkerConfiguration(name: setting(name, "WA_OUTBOX_WORKER_NAME", "\(ProcessInfo.processInfo.hostName)-\(ProcessInfo.processInfo.processIdentifier)"))
        configuration.concurrency = setting(concurrency, "WA_OUTBOX_CONCURRENCY", defaults.concurrency)
        configuration.batchSize = setting(batchSize, "WA_OUTBOX_BATCH_SIZE", defaults.batchSize)
        configuration.lease = .milliseconds(setting(leaseMilliseconds, "WA_OUTBOX_LEASE_MS", Int(defaults.lease.milliseconds)))
        configuration.pollInterval = .milliseconds(setting(pollMilliseconds, "WA_OUTBOX_POLL_INTERVAL_MS", Int(defaults.pollInterval.milliseconds)))
        configuration.gracePeriod = .milliseconds(setting(graceMilliseconds, "WA_OUTBOX_GRACE_MS", Int(defaults.gracePeriod.milliseconds)))
        configuration.retry = RetryPolicy(base: .milliseconds(setting(retryBaseMilliseconds, "WA_OUTBOX_RETRY_BASE_MS", Int(defaults.retry.base.milliseconds))),
                                          cap: .milliseconds(setting(retryCapMilliseconds, "WA_OUTBOX_RETRY_CAP_MS", Int(defaults.retry.cap.milliseconds))))
        configuration.exitWhenIdle = exitWhenIdle
        let pruneEvery = setting(pruneIntervalMilliseconds, "WA_OUTBOX_PRUNE_INTERVAL_MS", Int(defaults.pruneInterval?.milliseconds ?? 0))
        configuration.pruneInterval = pruneEvery > 0 ? .milliseconds(pruneEvery) : nil
        configuration.healthInterval = .milliseconds(max(setting(healthIntervalMilliseconds, "WA_OUTBOX_HEALTH_INTERVAL_MS", Int(defaults.healthInterval.milliseconds)), 100))
        configuration.retention = retention.retention
        configuration.requestTimeout = .milliseconds(setting(requestTimeoutMilliseconds, "WA_OUTBOX_REQUEST_TIMEOUT_MS", Int(defaults.requestTimeout.milliseconds)))
        guard configuration.concurrency > 0, configuration.batchSize > 0, configuration.lease >= .milliseconds(300) else {
            throw ValidationError("concurrency and batch size must be positive and the lease at least 300 ms")
        }
        let admin = try AdminAddress(setting(adminListen, "WA_OUTBOX_ADMIN_LISTEN", AdminAddress.default))

        let db = try database.database(connections: 6, logger: logger)
        let sim = try WhatsAppSimulator(configuration: simulator.configuration, deliveryLog: simDeliveryLog.map { URL(fileURLWithPath: $0) })
        let engines = engineDirectory(database: db, simulator: sim, requestTimeout: configuration.requestTimeout, defaultLimits: limits.defaults)
        var coordinator: Coordinator?
        if noLimits {
            logger.warning("--no-limits: running without rate limits, pacing or dispatch locks")
        } else if let url = redisURL ?? environment["REDIS_URL"], !url.isEmpty {
            let redis = RedisDatabase(configuration: try RedisConfiguration(url: url), maxConnections: 4, logger: logger)
            // A dispatch lock must outlive the longest dispatch; the lease keeper renews it while it is held.
            coordinator = Coordinator(redis: redis, prefix: setting(redisPrefix, "WA_OUTBOX_REDIS_PREFIX", "wa-outbox"),
                                      lockTTL: configuration.requestTimeout + .seconds(5), logger: logger)
        } else {
            throw ValidationError("""
                REDIS_URL is not set. Without Redis nothing limits how fast a session sends (WhatsApp bans numbers \
                that send too fast) and nothing stops two workers dispatching one message. Set REDIS_URL or \
                --redis-url; for benchmarks and the simulator only, --no-limits runs without them.
                """)
        }
        let worker = Worker(configuration: configuration, database: db, listenerConfiguration: try database.configuration(),
                            engines: engines, coordinator: coordinator, logger: logger)
        // The exporter first: the group stops its services in reverse order, so it flushes the last spans.
        var services = try tracing.bootstrap(serviceName: "wa-outbox-worker", logger: logger).map { [$0] } ?? []
        // --exit-when-idle makes the worker return by itself: that ends the group normally.
        services.append(.init(service: WorkerService(worker: worker), successTerminationBehavior: .gracefullyShutdownGroup))
        if let admin {
            let registry = PrometheusCollectorRegistry()
            MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
            let router = AdminServer.router(acceptsWork: { worker.isAcceptingWork }, database: db, coordinator: coordinator, registry: registry,
                                            operatorToken: environment["WA_OUTBOX_ADMIN_TOKEN"], webhookSecrets: webhookSecrets())
            // The operator console, for deployments without an API process (behind its own login).
            Console(database: db, adminToken: environment["WA_OUTBOX_ADMIN_TOKEN"], logger: logger).register(on: router)
            let application = Application(router: router, configuration: .init(address: .hostname(admin.host, port: admin.port)), logger: logger)
            // A failing admin server ends the whole process (the group cancels the worker, which
            // then shuts down within its grace period), with an error that says what to change.
            services.append(.init(service: ListeningService(application: application, address: "\(admin)", option: "--admin-listen")))
        }
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(
            services: services,
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        ))
        do {
            try await group.run()
        } catch {
            await sim.flush()
            throw error
        }
        await sim.flush()
        await db.close()
    }

    /// Each engine's receipt-webhook secret, from its environment variable.
    private func webhookSecrets() -> [ReceiptWebhook.Engine: String] {
        var secrets: [ReceiptWebhook.Engine: String] = [:]
        for engine in ReceiptWebhook.Engine.allCases {
            if let secret = environment[engine.secretVariable], !secret.isEmpty { secrets[engine] = secret }
        }
        return secrets
    }
}

/// The worker as a lifecycle service: a graceful shutdown signal becomes `Worker.shutdown()`.
struct WorkerService: Service {
    let worker: Worker

    func run() async throws {
        try await withGracefulShutdownHandler {
            try await worker.run()
        } onGracefulShutdown: {
            worker.shutdown()
        }
    }
}

/// Where the admin port listens: `--admin-listen HOST:PORT`, or nil for `off`.
struct AdminAddress: CustomStringConvertible {
    static let `default` = "127.0.0.1:9464"
    var host: String
    var port: Int

    init?(_ text: String, option: String = "--admin-listen") throws {
        guard text != "off" else { return nil }
        let parts = text.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1]) else { throw ValidationError("\(option) takes HOST:PORT or off") }
        host = String(parts[0])
        self.port = port
    }

    var description: String { "\(host):\(port)" }
}
