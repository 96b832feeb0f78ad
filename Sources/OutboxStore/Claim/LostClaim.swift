import Foundation
import PostgresClient

extension ClaimQuery {
    /// The jobs a claim with `token` took and still holds under `workerID`, for a claim whose
    /// answer was lost. A claim goes with its `COMMIT` in one round trip, so when the connection
    /// breaks before the answer arrives, the claim may have committed, or may still be running on
    /// the server (its backend not yet aware that the client is gone) and commit later. So the
    /// claim's backend is ended first (`pg_terminate_backend`, waiting up to 10 s for it to exit):
    /// what the search finds afterwards is final. The backend is named by its process id and its
    /// start time, so a process that reused the id is left alone; one gone already needs nothing.
    /// Throws when the backend outlives the wait (or the server refuses to end it): the caller
    /// tries again. `PostgresBackend.none`: a claim known to have committed. Running jobs are found
    /// through their busy lanes (`lanes_running`; a lane's `run` names every job of a run), never
    /// by scanning jobs.
    ///
    /// Behind PgBouncer (session pooling), the backend may already serve another client of the
    /// same role when it is ended; that client sees its connection break, as after a restart.
    public static func lostClaim(token: UUID, workerID: UUID, backend: PostgresBackend, on connection: PostgresConnection) async throws -> [Int64] {
        if backend != .none {
            let ended = try await connection.query("""
                SELECT pg_terminate_backend(a.pid, 10000) FROM pg_stat_activity a
                WHERE a.pid = \(backend.pid) AND (extract(epoch FROM a.backend_start) * 1000000)::int8 = \(backend.startedMicroseconds)
                  AND a.pid <> pg_backend_pid()
                """)
            if let row = ended.first, try !row.decode(Bool.self, at: 0) {
                throw PostgresError(kind: .server, message: "backend \(backend.pid), which sent a claim whose answer was lost, has not ended within 10 s")
            }
        }
        return try await connection.query("""
            SELECT j.id FROM wa_outbox.lanes l
            CROSS JOIN LATERAL unnest(coalesce(l.run, ARRAY[l.running_job])) AS r(id)
            JOIN wa_outbox.jobs j ON j.id = r.id
            WHERE l.busy AND j.state = 'running' AND j.worker_id = \(workerID) AND j.claim_token = \(token)
            """).map { try $0.decode(Int64.self, at: 0) }
    }
}
