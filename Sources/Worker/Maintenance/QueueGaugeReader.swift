import OutboxStore
import PostgresClient

/// Exports the queue's depth, the oldest waiting job's age and the demand for dispatch slots as
/// gauges. Every worker exports the same fleet-wide values: aggregate them with max, not sum.
struct QueueGaugeReader: MaintenanceService {
    let name = "reading queue gauges"
    let interval: Duration
    let database: PostgresDatabase

    func runOnce() async throws {
        let gauges = try await database.withConnection { try await QueueGauges.read(on: $0) }
        WorkerMetrics.queue(gauges)
    }
}
