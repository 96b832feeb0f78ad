import Foundation
import PostgresClient

extension ClaimQuery {
    /// The jobs a claim with `token` took and still holds under `workerID`, for a claim whose
    /// answer was lost. A claim goes with its `COMMIT` in one round trip, so when the connection
    /// breaks before the answer arrives, the claim may have committed, or may still be running on
    /// the server (its backend not yet aware that the client is gone) and commit later. So the
    /// claim's backend (`backendPID`) is ended first (`pg_terminate_backend`, waiting up to 10 s
    /// for it to exit): what the search finds afterwards is final. A backend that outlives the
    /// wait throws, and the caller tries again. Running jobs are found through their busy lanes
    /// (`lanes_running`; a lane's `run` names every job of a run), never by scanning jobs.
    public static func lostClaim(token: UUID, workerID: UUID, backendPID: Int32, on connection: PostgresConnection) async throws -> [Int64] {
        let ended = try await connection.query("""
            SELECT pg_terminate_backend(a.pid, 10000) FROM pg_stat_activity a
            WHERE a.pid = \(backendPID) AND a.pid <> pg_backend_pid()
            """)
        if let row = ended.first, try !row.decode(Bool.self, at: 0) {
            throw PostgresError(kind: .server, message: "backend \(backendPID), which sent a claim whose answer was lost, has not ended within 10 s")
        }
        return try await connection.query("""
            SELECT j.id FROM wa_outbox.lanes l
            CROSS JOIN LATERAL unnest(coalesce(l.run, ARRAY[l.running_job])) AS r(id)
            JOIN wa_outbox.jobs j ON j.id = r.id
            WHERE l.busy AND j.state = 'running' AND j.worker_id = \(workerID) AND j.claim_token = \(token)
            """).map { try $0.decode(Int64.self, at: 0) }
    }
}
