import Coordination
import HTTPSurface
import Hummingbird
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
    public var logger: Logger
    /// The event stream's routes (`EventRoutes(hub:tickets:)`); nil for none.
    public var events: EventRoutes?

    public init(database: PostgresDatabase, coordinator: Coordinator?, jobEvents: any JobEvents, syncTimeout: Duration = .seconds(25), logger: Logger,
                events: EventRoutes? = nil) {
        self.database = database
        self.coordinator = coordinator
        self.jobEvents = jobEvents
        self.syncTimeout = syncTimeout
        self.logger = logger
        self.events = events
    }
}

/// The gateway API's router: every error in the one envelope, every route behind authentication.
public enum Gateway {
    public static func router(_ dependencies: GatewayDependencies, authenticate: some RouterMiddleware<GatewayContext>) -> Router<GatewayContext> {
        let router = Router(context: GatewayContext.self)
        router.add(middleware: APIErrorMiddleware<GatewayContext>())
        router.get("/healthz") { _, _ in "ok\n" }
        let api = router.group("/api/v1").add(middleware: authenticate)
        dependencies.events?.register(on: api)
        return router
    }
}

extension GatewayContext {
    /// The caller, if it holds `capability`: 401 without credentials, 403 without the capability.
    public func require(_ capability: Capability) throws -> Principal {
        guard let principal else { throw APIError.unauthorized("missing or invalid credentials: send Authorization: Bearer <api key or login token>") }
        guard principal.capabilities.contains(capability) else {
            throw APIError(.forbidden, .forbidden, "this credential lacks the '\(capability.rawValue)' capability")
        }
        return principal
    }
}
