import Foundation
import OutboxCore
import PostgresClient
import Synchronization

/// Enqueues the requests that arrive while others are being written in one statement and one
/// commit, for a process that enqueues for many clients at once (the gateway API).
///
/// Each request alone costs PostgreSQL a transaction: its commit, its round trip, its wake-ups,
/// about three times the work of the enqueue itself (BENCHMARKS.md, *Enqueues in batches*). Here
/// one statement runs at a time, with up to `maxBatch` requests; whatever arrives meanwhile waits
/// and goes in the next one, so a lone request is written at once and a busy second shares
/// commits. Two or four statements at once took about as many sends a second and lengthened the
/// slowest answers (BENCHMARKS.md, *One batch at a time*).
///
/// - A batch is `wa_outbox.enqueue_notify_after_commit` once per request in one statement, in
///   (session, chat) order, so two batches take their chats' lane rows in the same order; one
///   NOTIFY follows its commit (`WakeupNotifier`).
/// - A request alone in its batch goes through `Outbox.enqueue`, as before.
/// - When a batch fails (one request's invalid payload, an unknown session, a deadlock), it is
///   rolled back whole and each of its requests is enqueued alone, so each gets its own answer
///   and a bad request never costs another one its job.
public final class EnqueueBatcher: Sendable {
    private struct Waiting {
        var request: EnqueueRequest
        var continuation: CheckedContinuation<Result<SendResult, OutboxError>, Never>
    }

    private struct State {
        var waiting: [Waiting] = []
        var writing = false
        var statements = 0
        var largest = 0
    }

    private let database: PostgresDatabase
    private let notifier: WakeupNotifier
    private let state = Mutex(State())
    private static let maxBatch = 128

    public init(database: PostgresDatabase, notifier: WakeupNotifier) {
        self.database = database
        self.notifier = notifier
    }

    /// Batch statements run so far, and the most requests one of them carried (for tests).
    public var statistics: (statements: Int, largest: Int) {
        state.withLock { ($0.statements, $0.largest) }
    }

    /// Enqueues `request` (or finds the job its idempotency key already made), as `Outbox.enqueue`.
    public func enqueue(_ request: EnqueueRequest) async throws(OutboxError) -> SendResult {
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<SendResult, OutboxError>, Never>) in
            let start = state.withLock { state in
                state.waiting.append(Waiting(request: request, continuation: continuation))
                guard !state.writing else { return false }
                state.writing = true
                return true
            }
            if start { Task { await self.drain() } }
        }
        return try result.get()
    }

    /// Writes batches until nothing waits.
    private func drain() async {
        while true {
            let batch = state.withLock { state -> [Waiting] in
                guard !state.waiting.isEmpty else {
                    state.writing = false
                    return []
                }
                let batch = Array(state.waiting.prefix(Self.maxBatch))
                state.waiting.removeFirst(batch.count)
                state.statements += 1
                state.largest = max(state.largest, batch.count)
                return batch
            }
            guard !batch.isEmpty else { return }
            await write(batch)
        }
    }

    private func write(_ batch: [Waiting]) async {
        if batch.count > 1 {
            do {
                let results = try await enqueueTogether(batch.map(\.request))
                notifier.signal()
                for (waiting, result) in zip(batch, results) { waiting.continuation.resume(returning: .success(result)) }
                return
            } catch let error as PostgresError where error.kind == .server {
                // The server refused the statement, so it was rolled back whole: each request alone.
            } catch {
                // The connection failed or the answer could not be read: whether the batch
                // committed is unknown, as for a single request that meets the same. Enqueuing
                // again could make a second job; each client is told, and retries with its
                // Idempotency-Key.
                for waiting in batch {
                    waiting.continuation.resume(returning: .failure(OutboxError(.engineError, "enqueue failed: \(error)")))
                }
                return
            }
        }
        for waiting in batch {
            do throws(OutboxError) {
                waiting.continuation.resume(returning: .success(try await Outbox.enqueue(waiting.request, in: database, notifier: notifier)))
            } catch {
                waiting.continuation.resume(returning: .failure(error))
            }
        }
    }

    /// One statement for all of `requests`; the results in the requests' order.
    private func enqueueTogether(_ requests: [EnqueueRequest]) async throws -> [SendResult] {
        let rows = try await database.withConnection { try await $0.query(EnqueueBatchQuery.query(requests)) }
        var results = [SendResult?](repeating: nil, count: requests.count)
        for row in rows {
            let index = Int(try row.decode(Int64.self, at: 0)) - 1
            guard results.indices.contains(index) else { throw OutboxError(.engineError, "unexpected batch row \(index)") }
            results[index] = SendResult(
                outboxId: String(try row.decode(Int64.self, at: 1)), waMessageId: try row.decode(String.self, at: 2),
                status: try row.decode(String.self, at: 4), replayed: try row.decode(Bool.self, at: 3),
                timestamp: Int64(try row.decode(Date.self, at: 5).timeIntervalSince1970))
        }
        return try results.map { result throws -> SendResult in
            guard let result else { throw OutboxError(.engineError, "a batch row is missing") }
            return result
        }
    }
}

/// The statement of a batch: `wa_outbox.enqueue_notify_after_commit` for each request, in
/// (session, chat) order; each row names its request by position (1-based).
enum EnqueueBatchQuery {
    static func query(_ requests: [EnqueueRequest]) -> PostgresQuery {
        var orgs: [String] = [], sessions: [String] = [], kinds: [String] = [], payloads: [String] = []
        var keys: [String?] = [], runAt: [Int64?] = [], parents: [String?] = [], states: [String?] = []
        for request in requests {
            orgs.append(request.org)
            sessions.append(request.session)
            kinds.append(request.kind.rawValue)
            payloads.append(request.payload)
            keys.append(request.idempotencyKey)
            runAt.append(request.runAt.map { Int64(($0.timeIntervalSince1970 * 1_000_000).rounded()) })
            parents.append(request.trace?.traceParent)
            states.append(request.trace?.traceState)
        }
        return PostgresQuery(sql, binds: [orgs.postgresBind, sessions.postgresBind, kinds.postgresBind, payloads.postgresBind,
                                         keys.postgresBind, runAt.postgresBind, parents.postgresBind, states.postgresBind])
    }

    static let sql = """
        SELECT i.n, r.outbox_id, r.wa_message_id, r.replayed, r.status, r.created_at
        FROM (
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::text[], $8::text[])
                WITH ORDINALITY AS i(org, session, kind, payload, idempotency_key, run_at_us, trace_parent, trace_state, n)
            ORDER BY i.session COLLATE "C", (i.payload::jsonb ->> 'chat') COLLATE "C", i.n
            OFFSET 0
        ) i
        CROSS JOIN LATERAL wa_outbox.enqueue_notify_after_commit(
            i.org, i.session, i.kind, i.payload::jsonb, i.idempotency_key,
            coalesce(to_timestamp(i.run_at_us / 1000000.0), now()), i.trace_parent, i.trace_state) r
        """
}
