import Coordination
import HTTPSurface
import HTTPTypes
import Hummingbird
import JobDispatch
import Logging
import OutboxCore
import OutboxStore
import PostgresClient

/// What the gateway's routes need from the process.
public struct GatewayDependencies: Sendable {
    public var database: PostgresDatabase
    /// Redis: rate limits for synchronous sends, idempotency locks. Nil only with `--no-limits`.
    public var coordinator: Coordinator?
    /// The final events of jobs, for synchronous sends that wait for theirs.
    public var jobEvents: any JobEvents
    /// How long a synchronous request waits for WhatsApp before it answers with the job still
    /// running (the job carries on as an async one).
    public var syncTimeout: Duration
    /// How long a request waits for another one with the same idempotency key before it answers 409.
    public var idempotencyWait: Duration = .seconds(10)
    /// Limits of sessions that set none of their own (the workers' defaults).
    public var defaultLimits: SessionLimits
    public var logger: Logger
    /// The event stream's routes (`EventRoutes(hub:tickets:)`); nil for none.
    public var events: EventRoutes?
    /// Wakes workers and event streams after each enqueue has committed.
    public var notifier: WakeupNotifier
    /// Writes the sends that arrive together in one statement and one commit.
    public var enqueuer: EnqueueBatcher
    /// Dispatches synchronous sends in this process when their jobs may run at once; nil: every
    /// synchronous send waits for a worker.
    public var direct: DirectDispatch?

    public init(database: PostgresDatabase, coordinator: Coordinator?, jobEvents: any JobEvents, syncTimeout: Duration = .seconds(25),
                defaultLimits: SessionLimits = SessionLimits(), logger: Logger, events: EventRoutes? = nil, direct: DirectDispatch? = nil) {
        self.database = database
        self.direct = direct
        self.coordinator = coordinator
        self.jobEvents = jobEvents
        self.syncTimeout = syncTimeout
        self.defaultLimits = defaultLimits
        self.logger = logger
        self.events = events
        self.notifier = WakeupNotifier(database: database, channels: [WakeupNotifier.jobs, WakeupNotifier.events], logger: logger)
        self.enqueuer = EnqueueBatcher(database: database, notifier: notifier)
    }
}

/// The gateway API's router: every error in the one envelope, every route behind authentication,
/// every request counted (`RequestMetricsMiddleware`) and traced (Hummingbird's `TracingMiddleware`).
public enum Gateway {
    public static func router(_ dependencies: GatewayDependencies, authenticate: some RouterMiddleware<GatewayContext>) -> Router<GatewayContext> {
        let router = Router(context: GatewayContext.self)
        // Outermost, so they see every answer, errors included, as the client gets it.
        router.add(middleware: RequestMetricsMiddleware<GatewayContext>())
        // The request's span, a child of its `traceparent`; a stream ticket in the query is not recorded.
        router.add(middleware: TracingMiddleware<GatewayContext>(redactingQueryParameters: ["ticket"]))
        router.add(middleware: APIErrorMiddleware<GatewayContext>())
        router.get("/healthz") { _, _ in "ok\n" }
        OpenAPIDocument.register(on: router)
        let api = router.group("/api/v1").add(middleware: authenticate)
        MessageRoutes(dependencies).register(on: api)
        dependencies.events?.register(on: api)
        return router
    }
}

extension GatewayContext {
    /// The caller, if it holds `capability`: 401 without credentials, 403 without the capability.
    public func require(_ capability: Capability) throws -> Principal {
        try requireAny([capability])
    }

    /// The caller, if it holds any of `capabilities`.
    public func requireAny(_ capabilities: Set<Capability>) throws -> Principal {
        guard let principal else { throw APIError.unauthorized("missing or invalid credentials: send Authorization: Bearer <api key or login token>") }
        guard !principal.capabilities.isDisjoint(with: capabilities) else {
            throw APIError(.forbidden, .forbidden, "this credential lacks the '\(capabilities.map(\.rawValue).sorted().joined(separator: "' or '"))' capability")
        }
        return principal
    }
}
