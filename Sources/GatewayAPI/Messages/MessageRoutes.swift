import Coordination
import Foundation
import NIOCore
import NIOFoundationCompat
import HTTPSurface
import HTTPTypes
import Hummingbird
import JobDispatch
import OutboxCore
import OutboxStore
import PostgresClient
import Synchronization

/// The seed's message endpoints: send (sync or `?async=true`), edit, revoke, and one message.
///
/// Every request becomes an outbox job. A synchronous one is dispatched by this process when its
/// job may run at once (`DirectDispatch`: the worker's claim rules, dispatch and fenced completion,
/// under a lease of this process's own); otherwise it waits for a worker and for its job's final
/// event. Either way chat order, session caps, pacing and the dispatch lock hold for it exactly as
/// for queued sends.
struct MessageRoutes {
    let dependencies: GatewayDependencies

    init(_ dependencies: GatewayDependencies) {
        self.dependencies = dependencies
    }

    func register(on group: RouterGroup<GatewayContext>) {
        group.post("/sessions/:session/messages") { request, context in try await send(request, context) }
        group.patch("/sessions/:session/messages/:mid") { request, context in try await target(.edit, request, context) }
        group.delete("/sessions/:session/messages/:mid") { request, context in try await target(.revoke, request, context) }
        group.get("/messages/:outboxId") { request, context in try await show(request, context) }
    }

    private func send(_ request: Request, _ context: GatewayContext) async throws -> Response {
        let principal = try context.require(.send)
        let session = try RequestInput.identifier("session", context)
        try RequestInput.requireJSON(request)
        let body = try SendBody(try await collect(request, context))
        let mode = try Mode(request.uri.queryParameters["async"].map(String.init))
        return try await submit(EnqueueRequest(org: principal.org, session: session, kind: .send,
                                               payload: body.payload, idempotencyKey: try IdempotencyKeyHeader.parse(request.headers[.idempotencyKey]),
                                               trace: RequestTrace.forJob(request)),
                                mode: mode)
    }

    private func target(_ kind: JobKind, _ request: Request, _ context: GatewayContext) async throws -> Response {
        let principal = try context.require(.send)
        let session = try RequestInput.identifier("session", context)
        let mid = try RequestInput.identifier("mid", context)
        try RequestInput.requireJSON(request)
        let payload = try SendBody.targeting(mid, kind: kind, body: try await collect(request, context))
        return try await submit(EnqueueRequest(org: principal.org, session: session, kind: kind,
                                               payload: payload, idempotencyKey: try IdempotencyKeyHeader.parse(request.headers[.idempotencyKey]),
                                               trace: RequestTrace.forJob(request)),
                                mode: .sync)
    }

    private func show(_ request: Request, _ context: GatewayContext) async throws -> Response {
        let principal = try context.requireAny([.read, .send])
        guard let id = Int64(try context.parameters.require("outboxId")),
              let detail = try await JobQueries.show(id, org: principal.org, in: dependencies.database) else {
            throw APIError.notFound("message not found")
        }
        let final = detail.events.last { FinalStatus.isFinal($0.status) }
        let result = SendResult(outboxId: String(id), waMessageId: detail.job.waMessageId, status: final?.status ?? detail.job.state,
                                replayed: false, timestamp: Int64(final?.timestamp ?? detail.job.createdAt.timeIntervalSince1970))
        return try JSONResponse.make(.ok, MessageDetail(result: result, events: detail.events))
    }

    /// Enqueues (or finds the request an idempotency key already made) and answers: at once for
    /// an async send, with the final result for a synchronous one.
    ///
    /// An async send is one statement: `wa_outbox.enqueue` itself refuses a session the
    /// organization does not have. A synchronous one reads the session first, for its admission.
    private func submit(_ enqueue: EnqueueRequest, mode: Mode) async throws -> Response {
        let session = mode == .sync ? try await SessionLookup.find(enqueue.session, org: enqueue.org, in: dependencies.database) : nil
        let run = { () async throws -> Response in
            if let key = enqueue.idempotencyKey, let outboxID = try await IdempotencyCheck.existing(org: enqueue.org, key: key, in: dependencies.database) {
                guard try await IdempotencyCheck.isSameRequest(outboxID: outboxID, as: enqueue, in: dependencies.database) else {
                    throw APIError(.unprocessableContent, .idempotencyKeyReused,
                                   "this Idempotency-Key was used for a different request; use a new key for a new request",
                                   details: ["outboxId": String(outboxID)])
                }
                return try await answer(try await dependencies.enqueuer.enqueue(enqueue), org: enqueue.org, mode: mode)
            }
            if let session { try await SyncAdmission.check(session, dependencies: dependencies) }
            if let session, let direct = dependencies.direct, await direct.offers(session) {
                return try await answer(try await direct.enqueue(enqueue), org: enqueue.org)
            }
            return try await answer(try await dependencies.enqueuer.enqueue(enqueue), org: enqueue.org, mode: mode)
        }
        guard let key = enqueue.idempotencyKey, let coordinator = dependencies.coordinator else { return try await run() }
        do {
            return try await coordinator.withIdempotencyLock(org: enqueue.org, key: key, wait: dependencies.idempotencyWait, run)
        } catch is IdempotencyKeyBusy {
            throw APIError(.conflict, .idempotencyKeyInUse, "a request with this Idempotency-Key is still running; retry it later")
        }
    }

    /// A synchronous send this process may be dispatching itself: its result when the dispatch
    /// ends in a final status before the deadline; otherwise (left to the workers, deferred, retried)
    /// what the workers make of it, as for any synchronous send.
    private func answer(_ taken: DirectDispatch.Taken, org: String) async throws -> Response {
        let deadline = ContinuousClock.now + dependencies.syncTimeout
        switch taken {
        case .queued(let result):
            return try await answer(result, org: org, mode: .sync, deadline: deadline)
        case .dispatching(let result, let dispatch):
            if let final = await Self.value(of: dispatch, until: deadline) { return try FinalStatus.response(final, replayed: false) }
            return try await answer(result, org: org, mode: .sync, deadline: deadline)
        }
    }

    /// The task's value, or nil if the deadline comes first. Neither waits for the other: the
    /// dispatch goes on past the deadline (a task group would wait for it, holding the answer).
    private static func value(of task: Task<StatusEvent?, Never>, until deadline: ContinuousClock.Instant) async -> StatusEvent? {
        let first = FirstAnswer()
        return await withCheckedContinuation { continuation in
            first.wait(continuation)
            let timer = Task {
                try? await Task.sleep(until: deadline)
                first.answer(nil)
            }
            Task {
                let value = await task.value
                timer.cancel()
                first.answer(value)
            }
        }
    }

    private func answer(_ result: SendResult, org: String, mode: Mode, deadline: ContinuousClock.Instant? = nil) async throws -> Response {
        guard mode == .sync, let jobID = Int64(result.outboxId) else {
            var queued = result
            queued.mode = "async"
            return try JSONResponse.make(.accepted, queued)
        }
        let deadline = deadline ?? ContinuousClock.now + dependencies.syncTimeout
        guard let final = await dependencies.jobEvents.final(org: org, jobID: jobID, until: deadline) else {
            // WhatsApp has not answered in time: the job goes on as an async one; its final
            // status arrives on the event stream.
            var pending = result
            pending.mode = "async"
            var response = try JSONResponse.make(.accepted, pending)
            response.headers[.location] = "/api/v1/messages/\(result.outboxId)"
            return response
        }
        return try FinalStatus.response(final, replayed: result.replayed)
    }

    private func collect(_ request: Request, _ context: GatewayContext) async throws -> Data {
        do {
            return Data(buffer: try await request.body.collect(upTo: context.maxUploadSize))
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw APIError(.contentTooLarge, .payloadTooLarge, "the body is larger than \(context.maxUploadSize) bytes")
        } catch is NIOTooManyBytesError {
            throw APIError(.contentTooLarge, .payloadTooLarge, "the body is larger than \(context.maxUploadSize) bytes")
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            // The connection ended inside the body, or its chunked encoding is broken: the
            // request's fault, never the server's (it answered 500).
            throw APIError.validation("the body ended early or is malformed: \(type(of: error))", details: ["field": "body"])
        }
    }
}

/// `?async=true` or the synchronous default.
enum Mode: Equatable {
    case sync, async

    init(_ value: String?) throws {
        switch value?.lowercased() {
        case nil, "", "false", "0": self = .sync
        case "true", "1": self = .async
        default: throw APIError.validation("async must be true or false", details: ["field": "async"])
        }
    }
}

struct MessageDetail: Encodable {
    var result: SendResult
    var events: [StatusEvent]
}

extension HTTPField.Name {
    static let idempotencyKey = HTTPField.Name("Idempotency-Key")!
}

/// Resumes a waiting continuation with the first answer given; later ones are dropped.
private final class FirstAnswer: Sendable {
    private let waiting = Mutex<CheckedContinuation<StatusEvent?, Never>?>(nil)

    func wait(_ continuation: CheckedContinuation<StatusEvent?, Never>) {
        waiting.withLock { $0 = continuation }
    }

    func answer(_ value: StatusEvent?) {
        waiting.withLock { continuation in
            continuation?.resume(returning: value)
            continuation = nil
        }
    }
}
