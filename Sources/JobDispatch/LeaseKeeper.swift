import Coordination
import Foundation
import Logging
import NIOConcurrencyHelpers
import OutboxStore
import PostgresClient

/// Keeps a process's lease on the jobs it claims: one row in `wa_outbox.workers`, renewed every
/// third of the lease. A worker has one; so has an API process that dispatches its synchronous
/// sends itself (`DirectDispatch`).
///
/// It has a PostgreSQL connection of its own, outside the pool, so no claim, flush, VACUUM or slow
/// statement can keep a heartbeat waiting; the connection is opened again after it breaks. Each
/// heartbeat also renews the dispatch locks this worker holds, so a lock lasts as long as the lease
/// that protects its job. By the worker's own clock it knows the latest moment the database can
/// still consider the lease valid (`holds`): counted from before the statement was sent.
public final class LeaseKeeper: Sendable {
    private let id: UUID
    private let name: String
    private let lease: Duration
    private let configuration: PostgresConfiguration
    private let logger: Logger
    private let validUntil = NIOLockedValueBox(ContinuousClock.now)
    private let connection = NIOLockedValueBox<PostgresConnection?>(nil)

    public init(id: UUID, name: String, lease: Duration, configuration: PostgresConfiguration, logger: Logger) {
        self.id = id
        self.name = name
        self.lease = lease
        self.configuration = configuration
        self.logger = logger
    }

    /// Whether the lease is certain to hold a while yet (a tenth of it: time for a dispatch to
    /// reach its engine). One failed heartbeat is not enough to stop a worker; two in a row are.
    public var holds: Bool { ContinuousClock.now + lease / 10 < validUntil.withLockedValue { $0 } }

    /// Registers (again), and starts counting the lease from before the statement was sent.
    public func register() async throws {
        let sent = ContinuousClock.now
        try await withConnection { connection in
            try await WorkerRegistry.register(id: id, name: name, host: ProcessInfo.processInfo.hostName,
                                              pid: ProcessInfo.processInfo.processIdentifier, lease: lease, on: connection)
        }
        validUntil.withLockedValue { $0 = sent + lease }
    }

    /// Registers, trying again while PostgreSQL cannot be reached, for up to `patience`: a worker
    /// started during a database restart or failover waits for it instead of exiting at once,
    /// which a service manager counts as a crash (systemd gives up after five in two minutes).
    /// Gives up early, with nothing registered, once `stopping` says so.
    public func register(patience: Duration, stopping: @Sendable () -> Bool) async throws {
        let deadline = ContinuousClock.now + patience
        var pause = Duration.milliseconds(250)
        while true {
            do {
                return try await register()
            } catch {
                guard ContinuousClock.now + pause < deadline, !stopping(), !Task.isCancelled else { throw error }
                logger.warning("cannot register this worker with PostgreSQL yet; trying again",
                               metadata: ["error": "\(error)", "retry.in": "\(pause)"])
                try await Task.sleep(for: pause)
                pause = min(pause * 2, .seconds(5))
            }
        }
    }

    /// Renews the lease every third of it until cancelled. `lost` gets the jobs' fate when the
    /// lease had lapsed (they may be other workers' by now); the worker then registers again.
    public func run(inFlight: @escaping @Sendable () -> Int, locks: @escaping @Sendable () -> [MessageLock],
             coordinator: Coordinator?, lost: @escaping @Sendable () -> Void) async {
        while !Task.isCancelled {
            guard (try? await Task.sleep(for: lease / 3)) != nil else { return }
            do {
                let sent = ContinuousClock.now
                let count = inFlight()
                let alive = try await withConnection { connection in
                    try await WorkerRegistry.heartbeat(id: id, lease: lease, inFlight: count, on: connection)
                }
                if alive {
                    validUntil.withLockedValue { $0 = sent + lease }
                    if let coordinator { await coordinator.renew(locks()) }
                } else {
                    lost()
                    logger.error("this worker's lease lapsed (heartbeats did not get through): its jobs went back to the queue; re-registering")
                    try await register()
                }
            } catch {
                logger.warning("heartbeat failed", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Removes this worker's row, and closes the lease connection.
    public func deregister() async {
        try? await withConnection { try await WorkerRegistry.deregister(id: id, on: $0) }
        await connection.withLockedValue { $0 }?.close()
    }

    private func withConnection<T: Sendable>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        let open: PostgresConnection
        if let existing = connection.withLockedValue({ $0 }), !existing.isBroken {
            open = existing
        } else {
            await connection.withLockedValue({ stale in defer { stale = nil }; return stale })?.close()
            open = try await PostgresConnection.connect(configuration, logger: logger)
            connection.withLockedValue { $0 = open }
        }
        return try await body(open)
    }
}
