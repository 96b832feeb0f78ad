import Foundation
import OutboxCore
import PostgresClient

/// Each session's connection state as its engine reports it, polled by the workers together.
///
/// Every worker asks for the sessions whose last check is older than the interval; the claim
/// takes them with `FOR UPDATE SKIP LOCKED` and stamps them at once, so each session is polled
/// about once per interval across the whole fleet, not once per job or per worker. The claim
/// query only takes sessions whose status is `unknown` or `connected`: jobs of a session that is
/// starting or offline stay queued and spend no attempt.
public enum SessionHealth {
    public enum Status: String, Sendable {
        case connected, connecting, disconnected
    }

    /// Active sessions due for a check, stamped as checked now.
    public static func due(every interval: Duration, limit: Int = 100, on connection: PostgresConnection) async throws -> [String] {
        try await connection.query("""
            UPDATE wa_outbox.sessions s SET status_checked_at = now()
            WHERE s.id IN (SELECT id FROM wa_outbox.sessions
                           WHERE state = 'active' AND status_checked_at <= now() - \(interval.milliseconds) * interval '1 millisecond'
                           ORDER BY status_checked_at LIMIT \(limit)
                           FOR UPDATE SKIP LOCKED)
            RETURNING s.id
            """).map { try $0.decode(String.self, at: 0) }
    }

    /// Records what the engines said. A session that comes back wakes the workers.
    ///
    /// Never waits for a session row: one that a completion holds keeps its old status until the
    /// next check. Waiting, a check that changed many sessions at once (every session's first
    /// check) deadlocked with completions, which lock the same rows in another order, and
    /// PostgreSQL aborted one of them after a second.
    public static func record(_ statuses: [(session: String, status: Status)], on connection: PostgresConnection) async throws {
        guard !statuses.isEmpty else { return }
        try await connection.query("""
            WITH locked AS (
                SELECT k.id, i.status
                FROM unnest(\(statuses.map(\.session))::text[], \(statuses.map(\.status.rawValue))::text[]) AS i(id, status)
                CROSS JOIN LATERAL (
                    SELECT s.id FROM wa_outbox.sessions s
                    WHERE s.id = i.id AND s.engine_status IS DISTINCT FROM i.status
                    OFFSET 0 FOR UPDATE SKIP LOCKED
                ) k
            ),
            changed AS (
                UPDATE wa_outbox.sessions s SET engine_status = l.status
                FROM locked l
                WHERE s.id = l.id
                RETURNING s.engine_status
            )
            SELECT pg_notify('wa_outbox_jobs', '') FROM changed WHERE engine_status = 'connected' LIMIT 1
            """)
    }
}
