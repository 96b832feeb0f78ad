import Foundation
import OutboxCore
import PostgresClient

extension ClaimQuery {
    /// Claims the job `wa_outbox.enqueue_to_claim` enqueued earlier in the same transaction (it
    /// names it in the setting `wa_outbox.enqueued_job`; a replayed request names none): what an
    /// API process does with a synchronous send it dispatches itself (`JobDispatch.DirectDispatch`),
    /// sent in one round trip with the enqueue.
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
    /// `token` is the claim's: the caller picks it, so that if the commit's fate is unknown it can
    /// find the job by it (`lostClaim(token:workerID:backend:on:)`).
    public static func claimEnqueued(workerID: UUID, token: UUID) -> PostgresQuery {
        PostgresQuery(enqueuedSQL, binds: [workerID.postgresBind, token.postgresBind])
    }

    /// $1: the claimer's id (its lease in `wa_outbox.workers`), $2: the claim's token.
    public static let enqueuedSQL = """
            WITH target AS (
                SELECT j.id, j.session_id, j.chat FROM wa_outbox.jobs j
                WHERE j.id = nullif(current_setting('wa_outbox.enqueued_job', true), '')::int8
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
                SELECT h.id AS job_id, 0::int8 AS k, 0 AS slot
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
                WHERE l.ready_at <= now() AND h.id = t.id AND h.available_at <= now()
            ),
            \(takeDue(worker: "$1", token: "$2", scan: "0, 0, 0::int8"))
            """
}
