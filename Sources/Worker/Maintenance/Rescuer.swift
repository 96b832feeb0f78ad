import Coordination
import Logging
import OutboxCore
import OutboxStore
import PostgresClient

/// Requeues the running jobs of workers whose lease lapsed, and lets those workers' dispatch locks
/// go, so a dead worker's jobs are sent again within the lease, not once its locks expire.
///
/// Any number of workers may run it at once: the requeue is a fenced completion, so one counts.
struct Rescuer: MaintenanceService {
    let name = "rescue"
    let interval: Duration
    let database: PostgresDatabase
    let coordinator: Coordinator?
    let logger: Logger
    /// Called after jobs were requeued (the claim loop may take them at once).
    let rescued: @Sendable () -> Void

    func runOnce() async throws {
        let jobs = try await database.withConnection { try await RescueQuery.rescue(on: $0) }
        guard !jobs.isEmpty else { return }
        if let coordinator {
            await coordinator.releaseLocks(of: jobs.map { (session: $0.sessionID, messageID: $0.kind.lockID(messageID: $0.messageID), holder: $0.workerID.lockHolder) })
        }
        WorkerMetrics.rescued(jobs.count)
        logger.warning("requeued jobs of a worker whose lease lapsed", metadata: ["count": "\(jobs.count)"])
        rescued()
    }
}
