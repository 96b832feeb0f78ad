import Foundation
import OutboxCore
import PostgresClient

/// Live workers and their leases: one row per worker process.
public enum WorkerRegistry {
    /// Registers (or re-registers) a worker with a lease of `lease` from now.
    public static func register(id: UUID, name: String, host: String, pid: Int32, lease: Duration, on connection: PostgresConnection) async throws {
        try await connection.query("""
            INSERT INTO wa_outbox.workers (id, name, host, pid, lease_expires_at)
            VALUES (\(id), \(name), \(host), \(Int(pid)), now() + \(lease.milliseconds) * interval '1 millisecond')
            ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), lease_expires_at = EXCLUDED.lease_expires_at
            """)
    }

    /// Renews the lease of all this worker's jobs in one row write. Returns false if the lease
    /// has lapsed (or the row is gone): its jobs may have gone to other workers already, so it is
    /// not renewed; the caller lets its jobs go and registers again, and its stale completions
    /// are fenced out.
    public static func heartbeat(id: UUID, lease: Duration, inFlight: Int, on connection: PostgresConnection) async throws -> Bool {
        let rows = try await connection.query("""
            UPDATE wa_outbox.workers
            SET heartbeat_at = now(), lease_expires_at = now() + \(lease.milliseconds) * interval '1 millisecond', in_flight = \(inFlight)
            WHERE id = \(id) AND lease_expires_at >= now()
            RETURNING id
            """)
        return !rows.isEmpty
    }

    public static func deregister(id: UUID, on connection: PostgresConnection) async throws {
        try await connection.query("DELETE FROM wa_outbox.workers WHERE id = \(id)")
    }
}
