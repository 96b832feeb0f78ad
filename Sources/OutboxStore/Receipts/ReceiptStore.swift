import Foundation
import OutboxCore
import PostgresClient

/// A receipt for one sent message, found by its session and the message's key id.
public struct ReceiptUpdate: Sendable, Equatable {
    public enum Level: Int16, Sendable, Comparable {
        /// `undelivered`: the engine reported after `sent` that the message was not delivered
        /// (WAHA's ack -1). Final: it follows any other level and nothing follows it.
        case delivered = 1, read = 2, undelivered = 3
        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
    }

    public var session: String
    public var keyID: String
    public var level: Level

    public init(session: String, keyID: String, level: Level) {
        self.session = session
        self.keyID = keyID
        self.level = level
    }
}

/// Turns receipts into `message.status` events `delivered`, `read` and `undelivered`.
///
/// A job's `receipt` column only moves forward, under a row lock: a repeated webhook, or a
/// `delivered` that arrives after `read`, writes nothing. A `read` for a message with no
/// `delivered` yet writes both, in order (read implies delivered). `undelivered` writes itself
/// alone, with `delivery_failed`, after whatever was written before, and ends the sequence. A receipt that finds no sent
/// job (it came before the job's completion was written, or the message is not ours) waits in
/// `receipts_pending`; `applyPending` applies it once the job is there.
public enum ReceiptStore {
    /// Records the receipts; returns the number of events written.
    @discardableResult
    public static func record(_ receipts: [ReceiptUpdate], in database: PostgresDatabase) async throws -> Int {
        guard !receipts.isEmpty else { return 0 }
        let rows = try await database.query(PostgresQuery(
            """
            WITH input AS (
                SELECT session_id, key_id, max(level) AS level
                FROM unnest($1::text[], $2::text[], $3::int8[]) AS i(session_id, key_id, level)
                GROUP BY session_id, key_id
            ),
            waiting AS (
                INSERT INTO wa_outbox.receipts_pending (session_id, key_id, level)
                SELECT i.session_id, i.key_id, i.level FROM input i
                WHERE NOT EXISTS (SELECT 1 FROM wa_outbox.jobs j
                                  WHERE j.session_id = i.session_id AND j.engine_key_id = i.key_id AND j.kind = 'send' AND j.state = 'succeeded')
                ON CONFLICT (session_id, key_id) DO UPDATE SET level = greatest(wa_outbox.receipts_pending.level, EXCLUDED.level)
            ),
            """ + apply,
            binds: [receipts.map(\.session).postgresBind, receipts.map(\.keyID).postgresBind,
                    receipts.map { Int64($0.level.rawValue) }.postgresBind]))
        return try rows[0].decode(Int.self, at: 0)
    }

    /// Applies waiting receipts whose job has been completed since, and forgets those older than a
    /// day; returns the number of events written.
    @discardableResult
    ///
    /// Every worker calls this every two seconds, and the table is nearly always empty: one cheap
    /// look first, so the statement below runs only when there is something to apply.
    public static func applyPending(in database: PostgresDatabase) async throws -> Int {
        guard try await database.query("SELECT EXISTS (SELECT 1 FROM wa_outbox.receipts_pending)")[0].decode(Bool.self, at: 0) else {
            return 0
        }
        let rows = try await database.query(PostgresQuery("""
            WITH expired AS (
                DELETE FROM wa_outbox.receipts_pending WHERE received_at < now() - interval '1 day'
            ),
            input AS (
                DELETE FROM wa_outbox.receipts_pending p
                USING (
                    SELECT q.session_id, q.key_id FROM wa_outbox.receipts_pending q
                    CROSS JOIN LATERAL (
                        SELECT 1 FROM wa_outbox.jobs j
                        WHERE j.session_id = q.session_id AND j.engine_key_id = q.key_id AND j.kind = 'send' AND j.state = 'succeeded'
                        LIMIT 1
                    ) sent
                ) ready
                WHERE p.session_id = ready.session_id AND p.key_id = ready.key_id
                RETURNING p.session_id, p.key_id, p.level::int8 AS level
            ),
            """ + apply))
        return try rows[0].decode(Int.self, at: 0)
    }

    /// The rest of both statements: given `input (session_id, key_id, level)`, moves each job's
    /// receipt forward under its row lock and writes the events it passes.
    ///
    /// Jobs are found one index probe per receipt (a lateral `FOR UPDATE`, which the planner cannot
    /// turn around). Written as a join, statistics taken while no job had an engine key yet led
    /// the planner to walk every sent job and probe the receipts for each: 64-508 ms per call on a
    /// million jobs, growing with retention.
    private static let apply = """
            locked AS (
                SELECT j.id, j.receipt AS old, i.level
                FROM input i
                CROSS JOIN LATERAL (
                    SELECT j.id, j.receipt FROM wa_outbox.jobs j
                    WHERE j.session_id = i.session_id AND j.engine_key_id = i.key_id
                      AND j.kind = 'send' AND j.state = 'succeeded' AND j.receipt < i.level
                    FOR UPDATE
                ) j
            ),
            updated AS (
                UPDATE wa_outbox.jobs j SET receipt = l.level
                FROM locked l WHERE j.id = l.id AND j.receipt < l.level
                RETURNING j.id, j.org, j.session_id, j.wa_message_id, j.attempts, l.old, l.level
            ),
            events AS (
                INSERT INTO wa_outbox.events (org, session_id, job_id, wa_message_id, kind, status, attempt, error_code, error_message)
                SELECT u.org, u.session_id, u.id, u.wa_message_id, 'send', s.status, u.attempts, s.code, s.message
                FROM updated u
                CROSS JOIN LATERAL (
                    SELECT step, CASE step WHEN 1 THEN 'delivered' ELSE 'read' END, NULL::text, NULL::text
                    FROM generate_series(u.old + 1, u.level) step WHERE u.level <= 2
                    UNION ALL
                    SELECT 3, 'undelivered', 'delivery_failed', 'the engine reported the message as not delivered (WAHA ack -1, ERROR)'
                    WHERE u.level = 3
                ) s (step, status, code, message)
                ORDER BY u.id, s.step
                RETURNING 1
            )
            SELECT count(*)::int8 FROM events
            """
}
