import Foundation
import OutboxCore
import PostgresClient

extension ClaimQuery {
    /// Claims one job by its id, in the transaction that enqueued it: what an API process does with
    /// a synchronous send it dispatches itself (`JobDispatch.DirectDispatch`).
    ///
    /// It takes the job only where the worker's claim would: when it is its lane's head (no earlier
    /// job of the chat is queued or running), it is due, and its session is active, connected, out
    /// of its rate-limit wait and below its cap. Otherwise it takes nothing, and the job waits for
    /// a worker in its turn; a send never overtakes its chat. The session is locked `FOR UPDATE SKIP
    /// LOCKED` as by the worker's claim: a session a worker is claiming from right now is left to
    /// that worker rather than waited for. The lane needs no lock of its own: the enqueue in the
    /// same transaction holds it. Then the same updates as every claim (`takeDue`).
    ///
    /// The lane is one primary-key probe behind `OFFSET 0`, its readiness checked outside it: as a
    /// join, or with `ready_at` inside the probe, the plan walked `lanes_session_ready` over every
    /// ready lane (of all sessions, or of this one), thousands under a backlog.
    ///
    /// $1 and $2: the job id (as the target and as the head it must be), $3: the claimer's id (its
    /// lease in `wa_outbox.workers`), $4: the claim's token, as `takeDue` numbers them.
    public static func claimJob(_ jobID: Int64, workerID: UUID, on connection: PostgresConnection) async throws -> Batch {
        try batch(from: try await connection.query(PostgresQuery(oneJobSQL, binds: [jobID.postgresBind, jobID.postgresBind, workerID.postgresBind, UUID().postgresBind])))
    }

    public static let oneJobSQL = """
            WITH target AS (
                SELECT j.session_id, j.chat FROM wa_outbox.jobs j WHERE j.id = $1
            ),
            runnable AS (
                SELECT s.id FROM target t
                CROSS JOIN LATERAL (
                    SELECT s.id FROM wa_outbox.sessions s
                    WHERE s.id = t.session_id
                      AND \(sessionCanRun)
                    FOR UPDATE SKIP LOCKED
                ) s
            ),
            due AS (
                SELECT h.id AS job_id
                FROM target t
                JOIN runnable r ON r.id = t.session_id
                CROSS JOIN LATERAL (
                    SELECT l.session_id, l.chat, l.ready_at FROM wa_outbox.lanes l
                    WHERE l.session_id = t.session_id AND l.chat = t.chat
                    OFFSET 0
                ) l
                CROSS JOIN LATERAL (
                    \(laneHead)
                ) h
                WHERE l.ready_at <= now() AND h.id = $2 AND h.available_at <= now()
            ),
            \(takeDue)
            """
}
