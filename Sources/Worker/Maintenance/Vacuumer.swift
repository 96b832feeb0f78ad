import Logging
import OutboxStore
import PostgresClient

/// Vacuums the queue tables whose dead rows passed their threshold (one worker at a time; see
/// `Maintenance.vacuumIfNeeded`). Runs wherever pruning does.
struct Vacuumer: MaintenanceService {
    let name = "vacuum"
    let interval: Duration = .seconds(10)
    let database: PostgresDatabase
    let logger: Logger

    func runOnce() async throws {
        let vacuumed = try await Maintenance.vacuumIfNeeded(in: database)
        if !vacuumed.isEmpty {
            logger.debug("vacuumed", metadata: ["tables": "\(vacuumed.joined(separator: ","))"])
        }
    }
}
