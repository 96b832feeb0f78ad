import Coordination
import Foundation
import HTTPTypes
import NIOFoundationCompat
import GatewayAPI
import HTTPSurface
import Hummingbird
import HummingbirdTesting
import JobDispatch
import OutboxCore
import OutboxStore
import PostgresClient
import RedisClient
import Simulator
import TestSupport
import Worker

/// Test-only authentication: the caller's organization and capabilities come from headers.
/// (The real authenticators are API keys and login JWTs.)
struct HeaderAuthentication: RouterMiddleware {
    func handle(_ request: Request, context: GatewayContext, next: (Request, GatewayContext) async throws -> Response) async throws -> Response {
        var context = context
        if let org = request.headers[HTTPField.Name("X-Test-Org")!] {
            let capabilities = (request.headers[HTTPField.Name("X-Test-Capabilities")!] ?? "send,read")
                .split(separator: ",").compactMap { Capability(rawValue: String($0)) }
            context.principal = Principal(org: org, capabilities: Set(capabilities), subject: "test")
        }
        return try await next(request, context)
    }
}

/// Waits for a job's final event by reading the job's events (the tests' stand-in for the
/// process's event hub).
struct PollingJobEvents: JobEvents {
    let database: PostgresDatabase

    func final(org: String, jobID: Int64, until deadline: ContinuousClock.Instant) async -> StatusEvent? {
        while ContinuousClock.now < deadline {
            if let detail = try? await JobQueries.show(jobID, org: org, in: database),
               let final = detail.events.last(where: { ["sent", "edited", "revoked", "failed", "canceled"].contains($0.status) }) {
                return final
            }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return nil
    }
}

/// A migrated database, Redis, the in-process simulator, and the gateway's router over them.
struct GatewayFixture {
    let url: String
    let database: PostgresDatabase
    let coordinator: Coordinator
    let simulator: WhatsAppSimulator

    static func make() async throws -> GatewayFixture {
        let url = try await TestEnvironment.freshDatabase(prefix: "api")
        let database = PostgresDatabase(configuration: PostgresConfiguration(url), maxConnections: 8, logger: TestEnvironment.logger)
        try await Migrator(migrations: try Migration.load(directory: TestEnvironment.migrationsDirectory), logger: TestEnvironment.logger).migrate(database)
        let redis = RedisDatabase(configuration: try RedisConfiguration(url: TestEnvironment.redisURL()), maxConnections: 8, logger: TestEnvironment.logger)
        let coordinator = Coordinator(redis: redis, prefix: "api-\(UUID().uuidString.prefix(8))", logger: TestEnvironment.logger)
        return GatewayFixture(url: url, database: database, coordinator: coordinator, simulator: try WhatsAppSimulator())
    }

    static let unlimited = SessionLimits(ratePerSecond: 10_000, burst: 10_000, pacing: false)

    func addSession(_ id: String, org: String = "org1", limits: SessionLimits = unlimited) async throws {
        var record = SessionRecord(id: id, org: org, engine: "sim", maxInFlight: 1)
        record.ratePerSecond = limits.ratePerSecond
        record.burst = limits.burst
        record.pacing = limits.pacing
        try await SessionRegistry.upsert(record, in: database)
    }

    func router(syncTimeout: Duration = .seconds(10)) -> Router<GatewayContext> {
        Gateway.router(GatewayDependencies(database: database, coordinator: coordinator, jobEvents: PollingJobEvents(database: database),
                                           syncTimeout: syncTimeout, defaultLimits: Self.unlimited, logger: TestEnvironment.logger),
                       authenticate: HeaderAuthentication())
    }

    /// A worker on this database, dispatching to the in-process simulator.
    func worker() -> Worker {
        var factories = EngineDirectory.httpEngines(requestTimeout: .seconds(5))
        let simulator = self.simulator
        factories["sim"] = { _, _ in SimulatorEngine(simulator: simulator) }
        var configuration = WorkerConfiguration(name: "api-test")
        configuration.pollInterval = .milliseconds(50)
        return Worker(configuration: configuration, database: database, listenerConfiguration: PostgresConfiguration(url),
                      engines: EngineDirectory(database: database, engines: factories, defaultLimits: Self.unlimited),
                      coordinator: coordinator, logger: TestEnvironment.logger)
    }

    /// Runs `body` with a worker running beside it.
    func withWorker<T>(_ body: () async throws -> T) async throws -> T {
        let worker = worker()
        let running = Task { try await worker.run() }
        defer { worker.shutdown() }
        let value = try await body()
        worker.shutdown()
        _ = try? await running.value
        return value
    }

    func count(_ sql: String) async throws -> Int {
        try await database.query(PostgresQuery(sql))[0].decode(Int.self, at: 0)
    }

    func close() async {
        await database.close()
    }
}

/// A decoded error envelope.
func envelope(_ response: TestResponse) throws -> APIError.Envelope.Body {
    try JSONDecoder().decode(APIError.Envelope.self, from: Data(buffer: response.body)).error
}

func sendResult(_ response: TestResponse) throws -> SendResult {
    try JSONDecoder().decode(SendResult.self, from: Data(buffer: response.body))
}

func headers(org: String = "org1", capabilities: String = "send,read", _ extra: [String: String] = [:]) -> HTTPFields {
    var fields = HTTPFields()
    fields[HTTPField.Name("X-Test-Org")!] = org
    fields[HTTPField.Name("X-Test-Capabilities")!] = capabilities
    fields[.contentType] = "application/json"
    for (name, value) in extra { fields[HTTPField.Name(name)!] = value }
    return fields
}
