import PostgresClient

/// What each worker exports as gauges on every heartbeat, read from the lanes (one row per chat
/// with work) and one index probe per lane's head, so its cost does not grow with the backlog.
/// `QueueStats`, which counts jobs by state, is for operators asking once; it scans the whole
/// table, which on a 1M-job backlog is what a worker would otherwise do every 10 s.
public struct QueueGauges: Sendable, Equatable {
    /// Jobs waiting to be dispatched (queued, not running), over all organizations.
    public var queued: Int
    /// Age of the oldest job at the head of a lane: how long the longest-waiting message has been
    /// waiting (0 when nothing waits).
    public var oldestQueuedSeconds: Double
    /// Dispatches that could start now (`wa_outbox.runnable_demand()`): ready lanes, at most one per
    /// chat, bounded by each session's free slots; only sessions the claim would take.
    public var runnableDemand: Int
    /// Dispatches running now (busy chats, at most each session's `max_in_flight`: a slot's chats
    /// are sent one after another) plus `runnableDemand` (`wa_outbox.dispatch_demand()`): what an
    /// autoscaler follows.
    public var dispatchDemand: Int

    public init(queued: Int, oldestQueuedSeconds: Double, runnableDemand: Int = 0, dispatchDemand: Int = 0) {
        self.queued = queued
        self.oldestQueuedSeconds = oldestQueuedSeconds
        self.runnableDemand = runnableDemand
        self.dispatchDemand = dispatchDemand
    }

    public static func read(on connection: PostgresConnection) async throws -> QueueGauges {
        let row = try await connection.query("""
            SELECT (coalesce(sum(l.pending), 0) - coalesce(sum(l.run_left), 0))::int8,
                   coalesce(extract(epoch FROM now() - min(h.created_at)), 0)::float8,
                   (SELECT wa_outbox.runnable_demand()),
                   (SELECT coalesce(sum(least(s.in_flight, s.max_in_flight)), 0)::int8 FROM wa_outbox.sessions s)
            FROM wa_outbox.lanes l
            LEFT JOIN LATERAL (
                SELECT j.created_at FROM wa_outbox.jobs j
                WHERE j.session_id = l.session_id AND j.chat = l.chat AND j.finished_at IS NULL AND j.state = 'queued'
                ORDER BY j.run_at, j.id
                LIMIT 1
            ) h ON true
            WHERE l.pending > 0
            """)[0]
        let runnable: Int = try row.decode(at: 2)
        return QueueGauges(queued: try row.decode(at: 0), oldestQueuedSeconds: try row.decode(at: 1),
                           runnableDemand: runnable, dispatchDemand: runnable + (try row.decode(Int.self, at: 3)))
    }

    /// Whether some lane has work a worker could claim now or soon (its session active and not
    /// known to be disconnected): `--exit-when-idle` goes on while it does.
    public static func hasRunnableWork(in database: PostgresDatabase) async throws -> Bool {
        let rows = try await database.query("""
            SELECT EXISTS (SELECT 1 FROM wa_outbox.lanes l JOIN wa_outbox.sessions s ON s.id = l.session_id
                           WHERE l.pending > 0 AND s.state = 'active' AND s.engine_status IN ('unknown', 'connected'))
            """)
        return try rows[0].decode(Bool.self, at: 0)
    }
}
