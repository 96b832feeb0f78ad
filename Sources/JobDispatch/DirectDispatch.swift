import Coordination
import Foundation
import Logging
import NIOConcurrencyHelpers
import OutboxCore
import OutboxStore
import PostgresClient

/// A synchronous send dispatched by the API process that took the request, instead of by a worker
/// woken for it: one transaction, sent in one round trip, enqueues the job and claims it; then the
/// engine is called and the completion written, with no process in between (BENCHMARKS.md,
/// *Synchronous sends dispatched by the API*).
///
/// It is the worker's way, not a second one:
/// - **The same claim rules** (`ClaimQuery.claimEnqueued`): only its chat's head, only when its session
///   is active, connected, out of its rate-limit wait and below its cap. Otherwise the job is left
///   queued for the workers and the request waits for its final event, as every sync send did.
/// - **The same dispatch** (`Dispatcher`: prepare, Redis admission and dispatch lock, reconcile,
///   perform, retry policy) and the same fenced completion (`CompletionQuery`).
/// - **A lease like a worker's** (`LeaseKeeper`, a row in `wa_outbox.workers`): if the process dies
///   mid-dispatch, the workers' rescue hands the job on as `worker_lost`, as for a dead worker. While
///   the lease does not hold, nothing is claimed here.
/// - **Detached from the request**: the dispatch runs in a task of its own, so a client that hangs
///   up, or a request that answers 202 at its deadline, never interrupts a send half made.
/// - Only engines this process offers: engine servers (WAHA, wuzapi, the simulator over HTTP), never
///   an engine inside another process (the in-process simulator is the workers').
public final class DirectDispatch: Sendable {
    /// What became of a synchronous request's job.
    public enum Taken: Sendable {
        /// Left to the workers: not its chat's turn, its session busy or waiting, or replayed.
        case queued(SendResult)
        /// Claimed here and being dispatched. The task ends with the job's final event, or nil
        /// when the job went back to the queue (a deferral, a retry, a completion fenced out).
        case dispatching(SendResult, Task<StatusEvent?, Never>)
    }

    private struct Running {
        var lock: MessageLock?
        var task: Task<StatusEvent?, Never>?
    }

    private struct State {
        var running: [Int64: Running] = [:]
        var stopping = false
    }

    /// This process's id in `wa_outbox.workers`, and the holder of its dispatch locks.
    public let id = UUID()
    private let database: PostgresDatabase
    private let dispatcher: Dispatcher
    private let lease: LeaseKeeper
    private let leaseDuration: Duration
    private let coordinator: Coordinator?
    /// Wakes workers and event streams: a job left queued.
    private let queued: WakeupNotifier
    /// Wakes event streams: a job claimed here, and each completion.
    private let completed: WakeupNotifier
    private let logger: Logger
    private let state = NIOLockedValueBox(State())

    public init(name: String, database: PostgresDatabase, engines: EngineDirectory, coordinator: Coordinator?, retry: RetryPolicy,
                lease: Duration, requestTimeout: Duration, logger: Logger) {
        self.database = database
        self.coordinator = coordinator
        self.leaseDuration = lease
        self.logger = logger
        self.lease = LeaseKeeper(id: id, name: name, lease: lease, configuration: database.configuration, logger: logger)
        self.dispatcher = Dispatcher(engines: engines, coordinator: coordinator, database: database, retry: retry,
                                     lockHolder: id.uuidString.lowercased(), landingBound: requestTimeout + .seconds(5), logger: logger)
        self.queued = WakeupNotifier(database: database, channels: [WakeupNotifier.jobs, WakeupNotifier.events], logger: logger)
        self.completed = WakeupNotifier(database: database, channels: [WakeupNotifier.events], logger: logger)
    }

    /// Whether this process can dispatch `session`'s jobs now: its lease holds, it is not shutting
    /// down, and it offers the session's engine.
    public func offers(_ session: SessionRecord) async -> Bool {
        guard lease.holds, !state.withLockedValue({ $0.stopping }) else { return false }
        return (try? await dispatcher.engines.context(for: session.id)) != nil
    }

    /// Enqueues `request` and, in the same transaction, claims its job if it may run now.
    public func enqueue(_ request: EnqueueRequest) async throws(OutboxError) -> Taken {
        let token = UUID()
        var backend = PostgresBackend.none
        let result: SendResult, batch: ClaimQuery.Batch, verdict: Preflight.Verdict
        do {
            (result, batch, verdict) = try await database.withConnection { connection in
                do {
                    return try await self.enqueueAndClaim(request, token: token, on: connection)
                } catch {
                    // Only a broken connection's backend may still be running the claim.
                    if connection.isBroken { backend = connection.backend }
                    throw error
                }
            }
        } catch {
            // Unless PostgreSQL refused a statement (then nothing committed), the commit's fate is
            // unknown: a job the claim took goes back through a fenced completion.
            if (error as? PostgresError)?.kind != .server { Task { [backend] in await self.handBack(token: token, backend: backend) } }
            throw Outbox.failure(error)
        }
        guard let job = batch.jobs.first else {
            if !result.replayed { queued.signal() }
            return .queued(result)
        }
        completed.signal()
        state.withLockedValue { $0.running[job.id] = Running() }
        let task = Task { await self.dispatch(job, settings: batch.sessions[job.sessionID], verdict: verdict) }
        state.withLockedValue { state in
            if state.running[job.id] != nil { state.running[job.id]?.task = task }
        }
        return .dispatching(result, task)
    }

    /// The enqueue and the claim in one transaction. A send's is one round trip (BEGIN, enqueue,
    /// claim, COMMIT pipelined); an edit or a revoke is checked against its window
    /// (`Preflight`) before the commit, so a failure there leaves its job queued.
    private func enqueueAndClaim(_ request: EnqueueRequest, token: UUID,
                                 on connection: PostgresConnection) async throws -> (SendResult, ClaimQuery.Batch, Preflight.Verdict) {
        let statements: [PostgresQuery] = [.begin, Outbox.query(request, function: "enqueue_to_claim"),
                                           ClaimQuery.claimEnqueued(workerID: id, token: token)]
        do {
            if request.kind == .send {
                let rows = try await connection.pipeline(statements + [.commit])
                return (try Outbox.result(from: rows[1]), try ClaimQuery.batch(from: rows[2]), Preflight.Verdict())
            }
            let rows = try await connection.pipeline(statements)
            let batch = try ClaimQuery.batch(from: rows[2])
            let verdict = try await Preflight.check(batch.jobs, on: connection)
            try await connection.execute("COMMIT")
            return (try Outbox.result(from: rows[1]), batch, verdict)
        } catch {
            if !connection.isBroken { try? await connection.execute("ROLLBACK") }
            throw error
        }
    }

    /// Finds the job a claim with `token` took, if its commit happened after all (once the claim's
    /// backend has ended: `ClaimQuery.lostClaim`), and hands it back (not sent, no attempt spent).
    /// Tries while PostgreSQL cannot be reached, as `write` does.
    private func handBack(token: UUID, backend: PostgresBackend) async {
        let giveUp = ContinuousClock.now + leaseDuration * 2
        var pause = Duration.milliseconds(50)
        while true {
            do {
                guard let jobID = try await database.withConnection({
                    try await ClaimQuery.lostClaim(token: token, workerID: id, backend: backend, on: $0)
                }).first else { return }
                _ = await write(Completion(jobID: jobID, claim: token, workerID: id,
                                           outcome: .defer_(after: .zero, code: .engineError, message: "the claim did not complete")))
                return
            } catch {
                guard ContinuousClock.now + pause < giveUp else {
                    logger.error("a claim whose commit may have happened could not be checked; the rescue hands its job on once this lease lapses",
                                 metadata: ["error": "\(error)"])
                    return
                }
                await Self.pause(pause)
                pause = min(pause * 2, .seconds(2))
            }
        }
    }

    /// Registers this process's lease, trying again while PostgreSQL cannot be reached, then renews
    /// it until cancelled. Until it holds, synchronous sends are left to the workers.
    public func keepLease() async {
        while !Task.isCancelled {
            do {
                try await lease.register()
                break
            } catch {
                logger.warning("cannot register this process's dispatch lease yet; synchronous sends go to the workers meanwhile",
                               metadata: ["error": "\(error)"])
                try? await Task.sleep(for: .seconds(1))
            }
        }
        await lease.run(inFlight: { self.state.withLockedValue { $0.running.count } },
                        locks: { self.state.withLockedValue { $0.running.values.compactMap(\.lock) } },
                        coordinator: coordinator, lost: {})
    }

    /// Stops claiming, lets dispatches under way finish until `deadline`, interrupts the rest
    /// (their jobs go back to the queue as `worker_lost`: they may have been sent), and gives up the lease.
    public func finish(by deadline: ContinuousClock.Instant) async {
        state.withLockedValue { $0.stopping = true }
        await waitForDispatches(until: deadline)
        let left = state.withLockedValue { $0.running.values.compactMap(\.task) }
        if !left.isEmpty {
            logger.warning("interrupting synchronous dispatches at shutdown", metadata: ["count": "\(left.count)"])
            left.forEach { $0.cancel() }
            await waitForDispatches(until: ContinuousClock.now + .seconds(2))
        }
        await lease.deregister()
    }

    // MARK: One job

    private func dispatch(_ job: ClaimedJob, settings: SessionRecord?, verdict: Preflight.Verdict) async -> StatusEvent? {
        var outcome: Outcome
        var lock: MessageLock?
        var engineMessageID: String?
        if let refused = verdict.refused[job.id] {
            outcome = refused
        } else {
            switch await dispatcher.prepare(job, engineTarget: verdict.engineTargets[job.id], settings: settings) {
            case .failure(let refusal):
                outcome = refusal.outcome
            case .success(let prepared):
                switch await dispatcher.admit([prepared])[0] {
                case .failure(let wait):
                    outcome = wait.outcome
                case .success(let granted):
                    lock = granted
                    state.withLockedValue { $0.running[job.id]?.lock = granted }
                    let lease = self.lease
                    let result = await dispatcher.perform(prepared, lock: granted, stillOwned: { lease.holds })
                    (outcome, engineMessageID) = (result.outcome, result.engineMessageID)
                }
            }
        }
        OutcomeLog.log(outcome, of: job, logger: logger)
        let counted = await write(completion(job, outcome, engineMessageID: engineMessageID))
        // A sent message is never dispatched again: its lock just expires. The lock of a job that
        // will run again goes once its completion is written.
        if let lock, let coordinator, outcome != .succeeded, counted != nil { await coordinator.release([lock]) }
        state.withLockedValue { _ = $0.running.removeValue(forKey: job.id) }
        return counted == true ? Self.finalEvent(job, outcome) : nil
    }

    private func completion(_ job: ClaimedJob, _ outcome: Outcome, engineMessageID: String? = nil) -> Completion {
        Completion(jobID: job.id, claim: job.claim, workerID: id, outcome: outcome,
                   engineMessageID: outcome == .succeeded ? engineMessageID : nil)
    }

    /// Writes a completion, trying again while PostgreSQL refuses it, for up to twice the lease (by
    /// then the lease has lapsed and the rescue hands the job on, unless heartbeats got through,
    /// and then so does this). Whether it counted (false: fenced out), or nil if it was not written.
    private func write(_ completion: Completion) async -> Bool? {
        let giveUp = ContinuousClock.now + leaseDuration * 2
        var pause = Duration.milliseconds(50)
        while true {
            do {
                let written = try await database.withConnection { try await CompletionQuery.write([completion], on: $0, notifyingAfterCommit: true) }
                // Jobs that waited behind this one (its chat's next, or its session's slot) go to
                // the workers, which claim again only when told.
                if written.readiedWork { queued.signal() } else { completed.signal() }
                return written.counted.contains(completion.jobID)
            } catch {
                guard ContinuousClock.now + pause < giveUp else {
                    logger.error("a synchronous send's completion could not be written; the rescue hands its job on once this lease lapses",
                                 metadata: ["job.id": "\(completion.jobID)", "error": "\(error)"])
                    return nil
                }
                logger.warning("writing a completion failed; retrying", metadata: ["job.id": "\(completion.jobID)", "error": "\(error)"])
                // A pause that shutdown's cancellation does not cut short: the completion must be written.
                await Self.pause(pause)
                pause = min(pause * 2, .seconds(2))
            }
        }
    }

    private func waitForDispatches(until deadline: ContinuousClock.Instant) async {
        while ContinuousClock.now < deadline, !state.withLockedValue({ $0.running.isEmpty }) {
            await Self.pause(.milliseconds(20))
        }
    }

    /// Sleeps for `duration`, even in a cancelled task.
    private static func pause(_ duration: Duration) async {
        await Task.detached { try? await Task.sleep(for: duration) }.value
    }

    /// The event the completion wrote for a final outcome, as the event stream shows it.
    static func finalEvent(_ job: ClaimedJob, _ outcome: Outcome) -> StatusEvent? {
        let status: String
        var code: String?, message: String?
        switch outcome {
        case .succeeded:
            switch job.kind {
            case .send: status = "sent"
            case .edit: status = "edited"
            case .revoke: status = "revoked"
            }
        case .failed(let failure, let text): (status, code, message) = ("failed", failure.rawValue, text)
        case .retry, .defer_: return nil
        }
        return StatusEvent(id: 0, org: job.org, session: job.sessionID, outboxId: String(job.id), waMessageId: job.waMessageID,
                           kind: job.kind.rawValue, status: status, attempt: job.attempt, errorCode: code, errorMessage: message,
                           timestamp: Date().timeIntervalSince1970)
    }
}
