import Logging
import OutboxStore
import PostgresClient

/// Applies receipts that arrived before their job's completion was written (see `ReceiptStore`).
struct ReceiptApplier: MaintenanceService {
    let name = "applying waiting receipts"
    let interval: Duration = .seconds(2)
    let database: PostgresDatabase

    func runOnce() async throws {
        _ = try await ReceiptStore.applyPending(in: database)
    }
}
