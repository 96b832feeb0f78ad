import ConnectionKit
import Logging

/// A pool of Redis connections and the usual ways to use one.
///
/// A connection that timed out or broke is replaced on the next lease: after a Redis restart the
/// first call fails with a `.connection` error and the following ones succeed.
public struct RedisDatabase: Sendable {
    public let configuration: RedisConfiguration
    public let pool: ConnectionPool<RedisConnection>

    public init(configuration: RedisConfiguration, maxConnections: Int = 4, logger: Logger) {
        self.configuration = configuration
        self.pool = ConnectionPool(name: "redis", maxConnections: maxConnections, logger: logger) {
            try await RedisConnection.connect(configuration, logger: logger)
        }
    }

    @discardableResult
    public func send(_ name: String, _ arguments: any RedisArgument...) async throws -> RedisValue {
        let command = RedisCommand(name, arguments)
        return try await pool.withConnection { try await $0.send(command) }
    }

    public func pipeline(_ commands: [RedisCommand]) async throws -> [RedisValue] {
        try await pool.withConnection { try await $0.pipeline(commands) }
    }

    @discardableResult
    public func evaluate(_ script: RedisScript, keys: [any RedisArgument], arguments: [any RedisArgument]) async throws -> RedisValue {
        try await pool.withConnection { try await $0.evaluate(script, keys: keys, arguments: arguments) }
    }

    public func loadScript(_ script: RedisScript) async throws {
        try await pool.withConnection { try await $0.load(script) }
    }

    public func close() async {
        await pool.close()
    }
}
