import Logging

/// A connection that a `ConnectionPool` can hold.
public protocol PooledConnection: AnyObject, Sendable {
    /// True once the connection has seen an I/O failure; the pool then closes it instead of reusing it.
    var isBroken: Bool { get }
    /// Whether it may be lent again as it is: false for one a caller gave back in a state the next
    /// would inherit (inside a transaction); the pool closes that one alone.
    var isReusable: Bool { get }
    func close() async
}

extension PooledConnection {
    public var isReusable: Bool { !isBroken }
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
/// - never more than `maxConnections` open at once: a slot counts from the moment a connection
///   starts opening until a broken one has finished closing, and a slot freed while tasks wait
///   passes to the first waiter still counted, so a newcomer cannot take it;
/// - connections are opened lazily and a broken one is closed, never reused; when one breaks, the
///   idle ones are closed as well, because a server restart breaks them all at once and each would
///   otherwise fail one more caller before being noticed;
/// - waiters are served in arrival order, and a waiter whose task is cancelled leaves the queue at
///   once with `CancellationError`.
public actor ConnectionPool<Connection: PooledConnection> {
    public typealias Factory = @Sendable () async throws -> Connection

    private enum Grant {
        case connection(Connection)
        /// A slot already counted in `open`, for the waiter to open a connection in.
        case openNew
    }

    private struct Waiter {
        var id: UInt64
        var continuation: CheckedContinuation<Grant, any Error>
    }

    private let maxConnections: Int
    private let factory: Factory
    private let logger: Logger
    private let name: String
    private var idle: [Connection] = []
    /// Slots in use: idle, leased, being opened, or broken and being closed.
    private var open = 0
    private var waiters: [Waiter] = []
    private var nextWaiterID: UInt64 = 0
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
        for waiter in waiters { waiter.continuation.resume(throwing: ConnectionPoolError.closed) }
        waiters.removeAll()
        for connection in toClose { await connection.close() }
    }

    /// Number of connection slots in use (idle, leased, opening or closing).
    public var openConnections: Int { open }

    /// Number of tasks waiting for a connection.
    public var waitingTasks: Int { waiters.count }

    private func lease() async throws -> Connection {
        guard !isClosed else { throw ConnectionPoolError.closed }
        if let connection = idle.popLast() { return connection }
        if open < maxConnections {
            open += 1
            return try await openConnection()
        }
        try Task.checkCancellation()
        let id = nextWaiterID
        nextWaiterID += 1
        let grant = try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { waiters.append(Waiter(id: id, continuation: $0)) }
        } onCancel: {
            // Runs after the waiter is queued (the actor is busy with `lease` until it suspends) or
            // after it was served; `cancelWaiter` then finds nothing to do.
            Task { await self.cancelWaiter(id) }
        }
        switch grant {
        case .connection(let connection): return connection
        case .openNew: return try await openConnection()
        }
    }

    private func cancelWaiter(_ id: UInt64) {
        guard let index = waiters.firstIndex(where: { $0.id == id }) else { return }
        waiters.remove(at: index).continuation.resume(throwing: CancellationError())
    }

    /// Opens a connection in a slot the caller has already counted in `open`.
    private func openConnection() async throws -> Connection {
        do {
            return try await factory()
        } catch {
            freeSlots(1)
            throw error
        }
    }

    /// Gives freed slots to waiters (still counted: a waiter opens in it) and uncounts the rest.
    private func freeSlots(_ count: Int) {
        for _ in 0..<count {
            if !waiters.isEmpty && !isClosed {
                waiters.removeFirst().continuation.resume(returning: .openNew)
            } else {
                open -= 1
            }
        }
    }

    private func release(_ connection: Connection) {
        guard connection.isBroken || !connection.isReusable || isClosed else {
            if !waiters.isEmpty {
                waiters.removeFirst().continuation.resume(returning: .connection(connection))
            } else {
                idle.append(connection)
            }
            return
        }
        var toClose = [connection]
        if connection.isBroken {
            toClose += idle
            idle.removeAll()
            logger.warning("connection broken; closing idle connections", metadata: [
                "pool": "\(name)", "pool.closed_idle": "\(toClose.count - 1)",
            ])
        } else if !connection.isReusable {
            logger.warning("connection given back in a state the next user would inherit (an open transaction); closing it", metadata: ["pool": "\(name)"])
        }
        // The slots stay counted until the connections are closed.
        Task {
            for connection in toClose { await connection.close() }
            self.freeSlots(toClose.count)
        }
    }
}
