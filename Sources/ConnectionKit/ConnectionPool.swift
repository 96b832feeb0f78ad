import Logging

/// A connection that a `ConnectionPool` can hold.
public protocol PooledConnection: AnyObject, Sendable {
    /// True once the connection has seen an I/O failure; the pool then closes it instead of reusing it.
    var isBroken: Bool { get }
    func close() async
}

/// Errors raised by the pool itself (not by a connection).
public enum ConnectionPoolError: Error, CustomStringConvertible {
    case closed
    public var description: String { "connection pool is closed" }
}

/// A small pool of at most `maxConnections` connections, leased to one task at a time.
///
/// Guarantees:
/// - a leased connection is used by exactly one task until it is returned, so callers never share
///   a connection concurrently;
/// - connections are opened lazily and a broken one is closed, never reused; when one breaks, the
///   idle ones are closed as well, because a server restart breaks them all at once and each would
///   otherwise fail one more caller before being noticed;
/// - waiters are served in arrival order.
public actor ConnectionPool<Connection: PooledConnection> {
    public typealias Factory = @Sendable () async throws -> Connection

    private enum Grant {
        case connection(Connection)
        case openNew
    }

    private let maxConnections: Int
    private let factory: Factory
    private let logger: Logger
    private let name: String
    private var idle: [Connection] = []
    private var open = 0
    private var waiters: [CheckedContinuation<Grant, any Error>] = []
    private var isClosed = false

    public init(name: String, maxConnections: Int, logger: Logger, factory: @escaping Factory) {
        precondition(maxConnections > 0, "a pool needs at least one connection")
        self.name = name
        self.maxConnections = maxConnections
        self.factory = factory
        self.logger = logger
    }

    /// Runs `body` with a connection leased for its duration.
    public nonisolated func withConnection<T>(
        _ body: (Connection) async throws -> T
    ) async throws -> T {
        let connection = try await lease()
        do {
            let result = try await body(connection)
            await release(connection)
            return result
        } catch {
            await release(connection)
            throw error
        }
    }

    /// Closes idle connections and refuses further leases. Leased connections close when returned.
    public func close() async {
        isClosed = true
        let toClose = idle
        idle.removeAll()
        open -= toClose.count
        for waiter in waiters { waiter.resume(throwing: ConnectionPoolError.closed) }
        waiters.removeAll()
        for connection in toClose { await connection.close() }
    }

    /// Number of connections currently open (idle or leased).
    public var openConnections: Int { open }

    private func lease() async throws -> Connection {
        guard !isClosed else { throw ConnectionPoolError.closed }
        if let connection = idle.popLast() { return connection }
        if open < maxConnections {
            return try await openConnection()
        }
        let grant = try await withCheckedThrowingContinuation { waiters.append($0) }
        switch grant {
        case .connection(let connection): return connection
        case .openNew: return try await openConnection()
        }
    }

    /// Opens a connection in a slot already counted as open by the caller or counted here.
    private func openConnection() async throws -> Connection {
        open += 1
        do {
            return try await factory()
        } catch {
            open -= 1
            // A waiter may now open a connection in the freed slot.
            if !waiters.isEmpty { waiters.removeFirst().resume(returning: .openNew) }
            throw error
        }
    }

    private func release(_ connection: Connection) {
        if connection.isBroken || isClosed {
            open -= 1
            var toClose = [connection]
            if connection.isBroken {
                toClose += idle
                open -= idle.count
                idle.removeAll()
                logger.warning("connection broken; closing idle connections", metadata: [
                    "pool": "\(name)", "pool.closed_idle": "\(toClose.count - 1)",
                ])
            }
            Task { for connection in toClose { await connection.close() } }
            if !waiters.isEmpty && !isClosed { waiters.removeFirst().resume(returning: .openNew) }
            return
        }
        if !waiters.isEmpty {
            waiters.removeFirst().resume(returning: .connection(connection))
        } else {
            idle.append(connection)
        }
    }
}
