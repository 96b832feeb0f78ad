import Coordination
import Engines
import Foundation
import Logging
import OutboxCore
import OutboxStore
import PostgresClient

/// What dispatching a job came to: its outcome, and for a success the engine's id of the message.
public struct DispatchResult: Sendable {
    public var outcome: Outcome
    public var engineMessageID: String?
    /// The engine already had the message (after an attempt that may have arrived): adopted, not sent again.
    public var reconciled = false

    public init(_ outcome: Outcome, engineMessageID: String? = nil, reconciled: Bool = false) {
        self.outcome = outcome
        self.engineMessageID = engineMessageID
        self.reconciled = reconciled
    }
}

/// A claimed job made ready for its engine: its operation decoded, its session's engine found.
public struct PreparedJob: Sendable {
    public var job: ClaimedJob
    public var operation: WhatsAppOperation
    public var context: SessionContext
}

/// One job's way to WhatsApp, shared by the worker and the API's synchronous sends:
/// prepare → admit → perform (or reconcile) → outcome.
///
/// - **Admission** asks Redis for the session's rate limit, pacing gap and budgets and takes the
///   message's dispatch lock, right before the engine call, so a lock never runs out while its job
///   waits for a connection. A paced session has one call at its engine at a time, and its gap
///   runs from the end of one call to the start of the next, so the engine never sees two calls
///   closer than the gap, however late a process resumes a task.
///   The lock's token starts with `lockHolder` (the worker id), so a rescuer that finds the holder
///   dead can let its locks go.
/// - **Perform or reconcile**: after an attempt that may have arrived, a send to an engine that
///   picks its own ids looks for the message first and adopts it instead of sending it twice.
///   It looks only once the request given up on would have landed (`landingBound` after it was
///   given up): before, the look finds nothing and the send that follows is a second copy.
/// - Failures become outcomes through the retry policy; nothing here writes to the database.
/// - Each engine call is a `wa_outbox.dispatch` span in the job's trace (`DispatchTracing`).
public final class Dispatcher: Sendable {
    public let engines: EngineDirectory
    public let coordinator: Coordinator?
    private let database: PostgresDatabase
    private let retry: RetryPolicy
    private let lockHolder: String
    private let landingBound: Duration
    private let logger: Logger

    /// - Parameter landingBound: how long after an attempt was given up (a timeout, a dead or
    ///   stopped worker) its request may still reach the engine: the request timeout + 5 s, as the
    ///   dispatch lock's TTL.
    public init(engines: EngineDirectory, coordinator: Coordinator?, database: PostgresDatabase, retry: RetryPolicy,
                lockHolder: String, landingBound: Duration, logger: Logger) {
        self.engines = engines
        self.coordinator = coordinator
        self.database = database
        self.retry = retry
        self.lockHolder = lockHolder
        self.landingBound = landingBound
        self.logger = logger
    }

    /// Decodes the job and finds its session's engine; a job that cannot be prepared gets its outcome.
    public func prepare(_ job: ClaimedJob, engineTarget: String?, settings: SessionRecord?) async -> Result<PreparedJob, OutcomeError> {
        do {
            var operation = try WhatsAppOperation(job: job)
            if let engineTarget { operation = operation.addressing(engineMessageID: engineTarget) }
            let context = try await engines.context(for: job.sessionID, settings: settings)
            if let wait = landingWait(job, operation, context) {
                return .failure(OutcomeError(.defer_(after: wait, code: .dispatchInProgress, message: """
                    an earlier attempt's request may still reach the engine; the message is looked for once it would have landed
                    """)))
            }
            return .success(PreparedJob(job: job, operation: operation, context: context))
        } catch let error as OutboxError {
            return .failure(OutcomeError(.failed(code: error.code, message: error.message)))
        } catch let failure as DispatchFailure {
            return .failure(OutcomeError(outcome(of: failure, job)))
        } catch {
            return .failure(OutcomeError(outcome(of: .transient("\(error)"), job)))
        }
    }

    /// Admits each job, in one Redis round trip for all: the granted ones with their dispatch
    /// lock, the others with the deferral that keeps their place without spending an attempt.
    public func admit(_ jobs: [PreparedJob]) async -> [Result<MessageLock?, OutcomeError>] {
        guard let coordinator else { return jobs.map { _ in .success(nil) } }
        let requests = jobs.map { Coordinator.Request(session: $0.job.sessionID, messageID: $0.job.kind.lockID(messageID: $0.job.waMessageID), limits: $0.context.limits) }
        return zip(jobs, await coordinator.admit(requests, holder: lockHolder)).map { prepared, admission in
            switch admission {
            case .granted(let token):
                return .success(MessageLock(session: prepared.job.sessionID, messageID: prepared.job.kind.lockID(messageID: prepared.job.waMessageID), token: token))
            case .wait(let delay, let reason):
                if reason == .coordinationUnavailable { DispatchMetrics.redisError() }
                let code: ErrorCode = reason == .dispatchInProgress ? .dispatchInProgress : .rateLimited
                return .failure(OutcomeError(.defer_(after: delay, code: code, message: reason.rawValue)))
            }
        }
    }

    /// Calls the engine (or adopts a message it already has) and classifies the answer; then a
    /// paced session's gap starts. Cancelled mid-call, the job is handed back as `worker_lost`: it
    /// may have been delivered.
    ///
    /// `stillOwned` is asked right before the engine is sent the operation, after any
    /// reconciliation (an engine call of its own, which can take long, or during which the process
    /// can be paused): once it says no, the job may be another worker's, and a send now could be a
    /// second copy of a message that worker sends. The job then goes back to the queue unsent.
    public func perform(_ prepared: PreparedJob, lock: MessageLock?, stillOwned: @escaping @Sendable () -> Bool = { true }) async -> DispatchResult {
        let result = await DispatchTracing.withSpan(prepared) { await call(prepared, stillOwned: stillOwned) }
        if let coordinator, let lock { await coordinator.callEnded(lock, limits: prepared.context.limits) }
        return result
    }

    private func call(_ prepared: PreparedJob, stillOwned: @Sendable () -> Bool) async -> DispatchResult {
        let (job, operation, context) = (prepared.job, prepared.operation, prepared.context)
        let started = ContinuousClock.now
        defer { DispatchMetrics.dispatchDuration(ContinuousClock.now - started, engine: context.engineName) }
        do {
            if job.maybeSent, case .send = operation,
               let found = try await unowned(context.engine.reconcile(operation, session: job.sessionID, since: job.createdAt), session: job.sessionID) {
                DispatchMetrics.reconciled(engine: context.engineName)
                logger.info("adopted the message the engine already had; not sending it again",
                            metadata: ["job.id": "\(job.id)", "session.id": "\(job.sessionID)", "org.id": "\(job.org)",
                                       "engine.message_id": "\(found.messageID)"])
                return DispatchResult(.succeeded, engineMessageID: found.messageID, reconciled: true)
            }
            guard stillOwned() else {
                return DispatchResult(.defer_(after: .zero, code: .engineError,
                                              message: "this worker's lease ran short before the send; not sent, the job goes back to the queue"))
            }
            return DispatchResult(.succeeded, engineMessageID: try await context.engine.perform(operation, session: job.sessionID).messageID)
        } catch {
            if Task.isCancelled {
                return DispatchResult(.defer_(after: .zero, code: .workerLost, message: "dispatch interrupted by shutdown"))
            }
            return DispatchResult(outcome(of: error, job))
        }
    }

    /// How much longer a send that may have arrived at an engine that picks its own ids waits
    /// before it is looked for, or nil to go on now.
    private func landingWait(_ job: ClaimedJob, _ operation: WhatsAppOperation, _ context: SessionContext) -> Duration? {
        guard job.maybeSent, case .send = operation, context.engine.choosesMessageIDs,
              let ago = job.maybeSentAgo, ago < landingBound else { return nil }
        return landingBound - ago
    }

    private func outcome(of failure: DispatchFailure, _ job: ClaimedJob) -> Outcome {
        retry.outcome(of: failure, attempt: job.attempt, maxAttempts: job.maxAttempts, deadline: job.deadline)
    }

    /// The first candidate no other job of the session already owns.
    private func unowned(_ candidates: [EngineReceipt], session: String) async throws(DispatchFailure) -> EngineReceipt? {
        guard !candidates.isEmpty else { return nil }
        let owned: Set<String>
        do {
            owned = try await OriginalMessages.owned(keyIDs: candidates.map { MessageKey.keyID(of: $0.messageID) }, session: session, in: database)
        } catch {
            throw .transient("cannot check reconciliation candidates: \(error)")
        }
        return candidates.first { !owned.contains(MessageKey.keyID(of: $0.messageID)) }
    }
}

/// An outcome decided before the engine was called (a refusal, a deferral), as an error.
public struct OutcomeError: Error, Sendable {
    public var outcome: Outcome
    public init(_ outcome: Outcome) { self.outcome = outcome }
}
