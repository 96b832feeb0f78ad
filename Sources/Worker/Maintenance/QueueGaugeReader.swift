import OutboxStore
import PostgresClient

/// Exports the queue's depth and the oldest waiting job's age as gauges.
struct QueueGaugeReader: MaintenanceService {
    let name = "reading queue gauges"
    let interval: Duration
    let database: PostgresDatabase

    func runOnce() async throws {
        let gauges = try await database.withConnection { try await QueueGauges.read(on: $0) }
        WorkerMetrics.queue(depth: gauges.queued, oldestSeconds: gauges.oldestQueuedSeconds)
    }
}
