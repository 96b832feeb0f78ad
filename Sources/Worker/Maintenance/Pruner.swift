import Logging
import OutboxStore
import PostgresClient

/// Deletes finished jobs and events past their retention, in batches (one process at a time).
struct Pruner: MaintenanceService {
    let name = "prune"
    let interval: Duration
    let retention: Retention
    let database: PostgresDatabase
    let logger: Logger

    func runOnce() async throws {
        let report = try await Maintenance.prune(retention, in: database)
        if report.jobs + report.events + report.lanes > 0 {
            logger.info("pruned", metadata: ["jobs": "\(report.jobs)", "events": "\(report.events)", "lanes": "\(report.lanes)"])
        }
    }
}
