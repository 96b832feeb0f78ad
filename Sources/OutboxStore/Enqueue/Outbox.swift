import Foundation
import OutboxCore
import PostgresClient

/// What to enqueue: one send, edit or revoke.
public struct EnqueueRequest: Sendable {
    public var org: String
    public var session: String
    public var kind: JobKind
    /// The JSON payload; README "Payloads" documents each shape.
    public var payload: String
    public var idempotencyKey: String?
    public var runAt: Date?
    /// The trace the job's dispatch continues; not part of what an idempotency key compares.
    public var trace: JobTraceContext?

    public init(org: String, session: String, kind: JobKind, payload: String, idempotencyKey: String? = nil, runAt: Date? = nil,
                trace: JobTraceContext? = nil) {
        self.org = org
        self.session = session
        self.kind = kind
        self.payload = payload
        self.idempotencyKey = idempotencyKey
        self.runAt = runAt
        self.trace = trace
    }
}

/// Enqueues jobs through `wa_outbox.enqueue`, the same SQL function any other language calls.
///
/// `enqueue(_:on:)` runs on a connection the caller holds, so it joins the caller's transaction:
/// the job exists exactly when the caller's own writes commit (the transactional outbox).
///
/// `enqueue(_:in:notifier:)` with a notifier commits silently and has the notifier wake workers
/// and event streams after the commit (migration 0016): concurrent enqueues then commit together.
public enum Outbox {
    public static func enqueue(_ request: EnqueueRequest, in database: PostgresDatabase, notifier: WakeupNotifier? = nil) async throws(OutboxError) -> SendResult {
        do {
            let result = try await database.withConnection { connection in
                try await enqueue(request, on: connection, function: notifier == nil ? "enqueue" : "enqueue_notify_after_commit")
            }
            notifier?.signal()
            return result
        } catch let error as OutboxError {
            throw error
        } catch {
            throw OutboxError(.engineError, "database unavailable: \(error)")
        }
    }

    public static func enqueue(_ request: EnqueueRequest, on connection: PostgresConnection) async throws(OutboxError) -> SendResult {
        try await enqueue(request, on: connection, function: "enqueue")
    }

    /// `function`: `enqueue`, or `enqueue_notify_after_commit` for a caller that notifies itself.
    static func enqueue(_ request: EnqueueRequest, on connection: PostgresConnection, function: String) async throws(OutboxError) -> SendResult {
        let rows: PostgresRows
        do {
            rows = try await connection.query(query(request, function: function))
        } catch {
            throw failure(error)
        }
        return try result(from: rows)
    }

    /// The statement that enqueues `request` through the SQL function `function`: `enqueue`,
    /// `enqueue_notify_after_commit`, or `enqueue_to_claim` (migration 0020: it also names the new
    /// job for `ClaimQuery.claimEnqueued` in the same transaction).
    public static func query(_ request: EnqueueRequest, function: String) -> PostgresQuery {
        var query = PostgresQuery("SELECT outbox_id, wa_message_id, replayed, status, created_at FROM wa_outbox." + function)
        query.append("(", request.org)
        query.append(", ", request.session)
        query.append(", ", request.kind.rawValue)
        query.append(", ", PostgresJSONB(request.payload))
        query.append(", ", request.idempotencyKey)
        query.append(", coalesce(", request.runAt)
        query.append(", now()), ", request.trace?.traceParent)
        query.append(", ", request.trace?.traceState)
        query.append(")")
        return query
    }

    /// What an enqueue's failure means to its caller: the input's fault (`validation_error`, …), or
    /// the database's.
    public static func failure(_ error: any Error) -> OutboxError {
        if let error = error as? OutboxError { return error }
        if let error = error as? PostgresError, let refused = OutboxError.refusedInput(error) { return refused }
        return OutboxError(.engineError, "enqueue failed: \(error)")
    }

    /// The result of `query`'s row.
    public static func result(from rows: PostgresRows) throws(OutboxError) -> SendResult {
        do {
            let row = rows[0]
            return SendResult(
                outboxId: String(try row.decode(Int64.self, at: 0)),
                waMessageId: try row.decode(String.self, at: 1),
                status: try row.decode(String.self, at: 3),
                replayed: try row.decode(Bool.self, at: 2),
                timestamp: Int64(try row.decode(Date.self, at: 4).timeIntervalSince1970)
            )
        } catch {
            throw OutboxError(.engineError, "unexpected enqueue result: \(error)")
        }
    }
}
