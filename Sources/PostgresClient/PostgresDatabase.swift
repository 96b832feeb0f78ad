import ConnectionKit
import Logging

/// A pool of PostgreSQL connections and the usual ways to use one.
///
/// Each call leases a connection for its duration; a connection that broke is replaced on the
/// next lease, so after a server restart the first call fails with a `.connection` error and the
/// following ones succeed.
public struct PostgresDatabase: Sendable {
    public let configuration: PostgresConfiguration
    public let pool: ConnectionPool<PostgresConnection>
    private let plans = PlanGeneration()

    public init(configuration: PostgresConfiguration, maxConnections: Int = 4, logger: Logger) {
        self.configuration = configuration
        let plans = self.plans
        self.pool = ConnectionPool(name: "postgres", maxConnections: maxConnections, logger: logger) {
            try await PostgresConnection.connect(configuration, plans: plans, logger: logger)
        }
    }

    /// Every connection of the pool remakes its plans before its next statement.
    public func renewPlans() {
        plans.renew()
    }

    @discardableResult
    public func query(_ query: PostgresQuery) async throws -> PostgresRows {
        try await pool.withConnection { try await $0.query(query) }
    }

    public func withConnection<T>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        try await pool.withConnection(body)
    }

    public func withTransaction<T: Sendable>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        try await pool.withConnection { try await $0.withTransaction(body) }
    }

    public func close() async {
        await pool.close()
    }
}
