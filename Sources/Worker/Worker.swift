import NIOConcurrencyHelpers
import Coordination
import Engines
import Foundation
import Logging
import OutboxCore
import OutboxStore
import PostgresClient
import Synchronization

public struct WorkerConfiguration: Sendable {
    /// Shown in `wa_outbox.workers` and logs.
    public var name: String
    /// Dispatches in flight in this process at most.
    public var concurrency = 512
    /// Jobs taken by one claim at most.
    public var batchSize = 500
    /// How long the jobs of a worker that stops heartbeating stay held; heartbeats come every third of it.
    public var lease: Duration = .seconds(30)
    /// The fallback poll, for when no notification arrives.
    public var pollInterval: Duration = .seconds(1)
    /// On SIGTERM, how long in-flight dispatches may take before their jobs are handed back.
    public var gracePeriod: Duration = .seconds(10)
    /// Drain the queue, then return.
    public var exitWhenIdle = false
    /// How long completions gather before one statement writes them all.
    public var completionWindow: Duration = .milliseconds(2)
    public var retry = RetryPolicy()
    /// How often this worker tries to prune (only one process prunes at a time); nil: never.
    public var pruneInterval: Duration? = .seconds(60)
    /// How often each session's engine is asked whether it is connected (shared by all workers).
    public var healthInterval: Duration = .seconds(10)
    public var retention = Retention()

    public init(name: String) {
        self.name = name
    }
}

/// One worker process's dispatch loop.
///
/// It claims batches of ready jobs (waking on NOTIFY, polling as a fallback), dispatches each to
/// its session's engine, and writes results back in batches, fenced by worker id and attempt.
/// A heartbeat renews the lease on all its jobs in one row write; every worker also rescues the
/// jobs of workers whose lease lapsed. `shutdown()` stops claiming, lets in-flight dispatches
/// finish within the grace period, hands back the rest without spending their attempt, and
/// returns.
public final class Worker: Sendable {
    public let id: UUID
    public let configuration: WorkerConfiguration
    private let database: PostgresDatabase
    private let listenerConfiguration: PostgresConfiguration
    private let engines: EngineDirectory
    private let coordinator: Coordinator?
    private let logger: Logger

    private struct State {
        var inFlight = 0
        var completions: [Completion] = []
        /// Dispatch locks to release once their completions are written.
        var locks: [MessageLock] = []
        var stopping = false
        var running: [Int64: ClaimedJob] = [:]
        /// By this worker's own clock, the latest the database can consider its lease valid: a
        /// lease is renewed to `lease` from when the statement ran, which is after it was sent.
        var leaseValidUntil = ContinuousClock.now
        var dispatched = 0
        var reconciled = 0
    }

    private let state = NIOLockedValueBox(State())
    /// Jobs admitted by one Redis script call.
    static let admissionChunk = 100
    private let wakeup = Wakeup()
    private let gates = DispatchGates(permits: EngineHosts.connectionsPerHost)
    private let flushNeeded = Wakeup()
    private let idle = Wakeup()

    public init(id: UUID = UUID(), configuration: WorkerConfiguration, database: PostgresDatabase,
                listenerConfiguration: PostgresConfiguration, engines: EngineDirectory, coordinator: Coordinator?, logger: Logger) {
        self.id = id
        self.coordinator = coordinator
        self.configuration = configuration
        self.database = database
        self.listenerConfiguration = listenerConfiguration
        self.engines = engines
        var logger = logger
        logger[metadataKey: "worker.id"] = "\(id)"
        self.logger = logger
    }

    /// Begins a graceful shutdown; `run()` returns when it is done.
    public func shutdown() {
        state.withLockedValue { $0.stopping = true }
        wakeup.signal()
    }

    /// False once shutdown has begun (readiness).
    public var isAcceptingWork: Bool { !state.withLockedValue { $0.stopping } }

    /// Jobs this worker has finished dispatching (for progress lines).
    public var dispatchedCount: Int { state.withLockedValue { $0.dispatched } }

    /// Sends whose re-send after an ambiguous timeout was avoided because the engine already had
    /// the message (WAHA reconciliation).
    public var reconciledCount: Int { state.withLockedValue { $0.reconciled } }

    public func run() async throws {
        try await register()
        logger.info("worker started", metadata: ["worker.name": "\(configuration.name)", "concurrency": "\(configuration.concurrency)"])
        let listener = PostgresListener(configuration: listenerConfiguration, channels: ["wa_outbox_jobs"], logger: logger)
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { for await _ in listener.events() { self.wakeup.signal() } }
            group.addTask { await self.heartbeatLoop() }
            group.addTask { await self.rescueLoop() }
            group.addTask { await self.flushLoop() }
            group.addTask { await self.healthLoop() }
            group.addTask { await self.receiptsLoop() }
            if let interval = configuration.pruneInterval {
                group.addTask { await self.pruneLoop(every: interval) }
                group.addTask { await self.vacuumLoop() }
            }
            try await claimLoop(&group)
            await drain()
            listener.stop()
            group.cancelAll()
        }
        try? await database.withConnection { try await WorkerRegistry.deregister(id: id, on: $0) }
        logger.info("worker stopped", metadata: ["dispatched": "\(dispatchedCount)"])
    }

    // MARK: Claiming

    private func claimLoop(_ group: inout ThrowingDiscardingTaskGroup<any Error>) async throws {
        while !state.withLockedValue({ $0.stopping }) {
            guard holdsLease() else {
                // Its jobs may be handed to others at any moment: take none until a heartbeat
                // gets through (the heartbeat loop logs why).
                await wakeup.wait(timeout: configuration.pollInterval)
                continue
            }
            let free = configuration.concurrency - state.withLockedValue { $0.inFlight }
            var claimed: [ClaimedJob] = []
            var engineTargets: [Int64: String] = [:]
            var sessions: [String: SessionRecord] = [:]
            var requested = 0
            if free > 0 {
                requested = min(configuration.batchSize, free)
                do {
                    (claimed, engineTargets, sessions) = try await claim(limit: requested)
                } catch {
                    WorkerMetrics.postgresError()
                    logger.warning("claim failed; will retry", metadata: ["error": "\(error)"])
                    await wakeup.wait(timeout: configuration.pollInterval)
                    continue
                }
                // Admission (a Redis round trip) runs beside the next claim instead of before it,
                // in chunks on separate connections, so the first dispatches start while Redis
                // still decides on the rest of a large batch.
                for start in stride(from: 0, to: claimed.count, by: Self.admissionChunk) {
                    let chunk = Array(claimed[start..<min(start + Self.admissionChunk, claimed.count)])
                    let targets = engineTargets
                    let settings = sessions
                    group.addTask {
                        await withDiscardingTaskGroup { dispatches in
                            for (job, operation, context, lock) in await self.admit(chunk, engineTargets: targets, sessions: settings) {
                                let work: DispatchGate.Work = { await self.dispatch(job, operation, context, lock: lock) }
                                if let host = context.engine.host {
                                    // An engine server takes a few dispatches at a time; the rest wait as records.
                                    if let runner = self.gates.gate(for: host).submit(work) { dispatches.addTask(operation: runner) }
                                } else {
                                    dispatches.addTask(operation: work)
                                }
                            }
                        }
                    }
                }
            }
            if claimed.count == requested && requested > 0 { continue }
            if configuration.exitWhenIdle, claimed.isEmpty, state.withLockedValue({ $0.inFlight == 0 && $0.completions.isEmpty }),
               try await !hasPendingWork() {
                logger.info("queue drained; exiting")
                shutdown()
                break
            }
            await wakeup.wait(timeout: configuration.pollInterval)
        }
    }

    /// The claimed jobs that may go on, for edits and revokes the engine's id of their message,
    /// and the settings of their sessions as the claim read them.
    private func claim(limit: Int) async throws -> ([ClaimedJob], engineTargets: [Int64: String], sessions: [String: SessionRecord]) {
        let (batch, verdict) = try await database.withConnection { connection in
            let batch = try await ClaimQuery.claim(workerID: id, limit: limit, on: connection)
            let verdict = try await Preflight.check(batch.jobs, on: connection)
            return (batch, verdict)
        }
        let jobs = batch.jobs
        let refused = verdict.refused
        state.withLockedValue { state in
            state.inFlight += jobs.count
            for job in jobs { state.running[job.id] = job }
        }
        for (jobID, outcome) in refused {
            if let job = jobs.first(where: { $0.id == jobID }) { report(job, outcome) }
        }
        return (jobs.filter { refused[$0.id] == nil }, verdict.engineTargets, batch.sessions)
    }

    private func hasPendingWork() async throws -> Bool {
        let rows = try await database.query("""
            SELECT EXISTS (SELECT 1 FROM wa_outbox.lanes l JOIN wa_outbox.sessions s ON s.id = l.session_id
                           WHERE l.pending > 0 AND s.state = 'active' AND s.engine_status IN ('unknown', 'connected'))
            """)
        return try rows[0].decode(Bool.self, at: 0)
    }

    // MARK: Dispatching

    private func logger(for job: ClaimedJob) -> Logger {
        var jobLogger = logger
        jobLogger[metadataKey: "job.id"] = "\(job.id)"
        jobLogger[metadataKey: "session.id"] = "\(job.sessionID)"
        jobLogger[metadataKey: "org.id"] = "\(job.org)"
        return jobLogger
    }

    /// Decodes each claimed job and finds its session's engine, then asks Redis to admit the whole batch in
    /// one round trip. Jobs that fail to decode fail; jobs over a limit are deferred without
    /// spending an attempt. Returns what may be dispatched now.
    private func admit(_ jobs: [ClaimedJob], engineTargets: [Int64: String], sessions: [String: SessionRecord]) async -> [(ClaimedJob, WhatsAppOperation, SessionContext, MessageLock?)] {
        var ready: [(ClaimedJob, WhatsAppOperation, SessionContext)] = []
        for job in jobs {
            do {
                var operation = try WhatsAppOperation(job: job)
                if let target = engineTargets[job.id] {
                    operation = operation.addressing(engineMessageID: target)
                }
                ready.append((job, operation, try await engines.context(for: job.sessionID, settings: sessions[job.sessionID])))
            } catch let error as OutboxError {
                report(job, .failed(code: error.code, message: error.message))
            } catch let failure as DispatchFailure {
                report(job, configuration.retry.outcome(of: failure, attempt: job.attempt, maxAttempts: job.maxAttempts, deadline: job.deadline))
            } catch {
                report(job, configuration.retry.outcome(of: .transient("\(error)"), attempt: job.attempt, maxAttempts: job.maxAttempts, deadline: job.deadline))
            }
        }
        guard let coordinator else { return ready.map { ($0.0, $0.1, $0.2, nil) } }
        let admissions = await coordinator.admit(ready.map { Coordinator.Request(session: $0.0.sessionID, messageID: $0.0.waMessageID, limits: $0.2.limits) })
        var granted: [(ClaimedJob, WhatsAppOperation, SessionContext, MessageLock?)] = []
        for ((job, operation, context), admission) in zip(ready, admissions) {
            switch admission {
            case .granted(let token):
                granted.append((job, operation, context, MessageLock(session: job.sessionID, messageID: job.waMessageID, token: token)))
            case .wait(let delay, let reason):
                // Over a limit: keep the job's place, spend no attempt, write no event.
                if reason == .coordinationUnavailable { WorkerMetrics.redisError() }
                let code: ErrorCode = reason == .dispatchInProgress ? .dispatchInProgress : .rateLimited
                report(job, .defer_(after: delay, code: code, message: reason.rawValue))
            }
        }
        return granted
    }

    private func dispatch(_ job: ClaimedJob, _ operation: WhatsAppOperation, _ context: SessionContext, lock: MessageLock?) async {
        // A job that waited for its engine server past the shutdown grace was handed back already.
        // `finish` then only releases its dispatch lock.
        guard state.withLockedValue({ $0.running[job.id] != nil }) else {
            finish(job, .defer_(after: .zero, code: .engineError, message: "worker shut down before the dispatch started"), lock: lock)
            return
        }
        // A worker cut off from the database (or stalled) past its lease no longer owns its jobs:
        // another worker may be sending them. It starts no dispatch; its completion is fenced out
        // if the job was taken over, and otherwise hands the job back.
        guard holdsLease() else {
            finish(job, .defer_(after: .zero, code: .engineError, message: "this worker could not renew its lease; the job goes back to the queue"), lock: lock)
            return
        }
        let outcome: Outcome
        var engineMessageID: String?
        let started = ContinuousClock.now
        defer { WorkerMetrics.dispatchDuration(ContinuousClock.now - started, engine: context.engineName) }
        do {
            // After an attempt that may have arrived (a timeout, a worker that died or shut down
            // mid-dispatch) an engine without caller-chosen ids may already have the message:
            // adopt it instead of sending it twice.
            if job.maybeSent, case .send = operation,
               let found = try await unclaimed(context.engine.reconcile(operation, session: job.sessionID, since: job.createdAt), session: job.sessionID) {
                engineMessageID = found.messageID
                state.withLockedValue { $0.reconciled += 1 }
                WorkerMetrics.reconciled(engine: context.engineName)
                logger(for: job).info("adopted the message the engine already had; not sending it again",
                                      metadata: ["engine.message_id": "\(found.messageID)"])
            } else {
                engineMessageID = try await context.engine.perform(operation, session: job.sessionID).messageID
            }
            outcome = .succeeded
        } catch {
            if Task.isCancelled {
                // Shut down mid-dispatch: hand the job back without spending its attempt. It may
                // have been delivered (`worker_lost` marks it maybe sent); the retry reuses its
                // message id.
                outcome = .defer_(after: .zero, code: .workerLost, message: "worker shut down during dispatch")
            } else {
                outcome = configuration.retry.outcome(of: error, attempt: job.attempt, maxAttempts: job.maxAttempts, deadline: job.deadline)
            }
        }
        report(job, outcome, lock: lock, engineMessageID: engineMessageID)
    }

    /// The first candidate no other job of the session already owns.
    private func unclaimed(_ candidates: [EngineReceipt], session: String) async throws(DispatchFailure) -> EngineReceipt? {
        guard !candidates.isEmpty else { return nil }
        let taken: Set<String>
        do {
            taken = Set(try await database.query("""
                SELECT engine_key_id FROM wa_outbox.jobs
                WHERE session_id = \(session) AND engine_key_id = ANY(\(candidates.map { MessageKey.keyID(of: $0.messageID) })::text[])
                """).map { try $0.decode(String.self, at: 0) })
        } catch {
            throw .transient("cannot check reconciliation candidates: \(error)")
        }
        return candidates.first { !taken.contains(MessageKey.keyID(of: $0.messageID)) }
    }

    /// Logs a job's outcome (one line per outcome, with job, session and organization ids) and
    /// queues its completion.
    private func report(_ job: ClaimedJob, _ outcome: Outcome, lock: MessageLock? = nil, engineMessageID: String? = nil) {
        let jobLogger = logger(for: job)
        switch outcome {
        case .succeeded:
            jobLogger.info("job sent", metadata: ["job.kind": "\(job.kind.rawValue)", "attempt": "\(job.attempt)"])
        case .failed(let code, let message):
            jobLogger.warning("job failed", metadata: ["job.kind": "\(job.kind.rawValue)", "error.code": "\(code.rawValue)", "error": "\(message)", "attempt": "\(job.attempt)"])
        case .retry(let delay, let code, _):
            jobLogger.info("job will retry", metadata: ["error.code": "\(code.rawValue)", "attempt": "\(job.attempt)", "retry_in": "\(delay)"])
        case .defer_(_, .accountRestricted, let message):
            jobLogger.error("WhatsApp restricted this session's account (463): its jobs are paused until an operator sets it active",
                            metadata: ["error": "\(message)"])
        case .defer_(let delay, let code, _):
            jobLogger.debug("job deferred", metadata: ["reason": "\(code.rawValue)", "retry_in": "\(delay)"])
        }
        WorkerMetrics.outcome(outcome, kind: job.kind)
        finish(job, outcome, lock: lock, engineMessageID: engineMessageID)
    }

    private func finish(_ job: ClaimedJob, _ outcome: Outcome, lock: MessageLock? = nil, engineMessageID: String? = nil) {
        let accepted = state.withLockedValue { state -> Bool in
            guard state.running.removeValue(forKey: job.id) != nil else { return false }
            state.inFlight -= 1
            if case .defer_ = outcome {} else { state.dispatched += 1 }
            state.completions.append(Completion(jobID: job.id, attempt: job.attempt, workerID: id, outcome: outcome,
                                                engineMessageID: outcome == .succeeded ? engineMessageID : nil))
            // A sent message is never dispatched again: its lock just expires (lockTTL). Locks of
            // jobs that will run again are released once their completion is written.
            if let lock, outcome != .succeeded { state.locks.append(lock) }
            return true
        }
        // Handed back already (shutdown, lapsed lease): a message that did go out keeps its lock
        // until it expires, so no other worker sends it meanwhile.
        if !accepted, let lock, let coordinator, outcome != .succeeded {
            Task { await coordinator.release([lock]) }
        }
        flushNeeded.signal()
    }

    // MARK: Completing

    /// Runs until the task is cancelled at the end of `run()`; `drain()` does the final flush.
    private func flushLoop() async {
        while !Task.isCancelled {
            await flushNeeded.wait(timeout: .milliseconds(200))
            guard (try? await Task.sleep(for: configuration.completionWindow)) != nil else { return }
            await flush()
        }
    }

    /// Writes all buffered completions in one statement; on failure keeps them and tries again.
    private func flush() async {
        let (batch, locks) = state.withLockedValue { state -> ([Completion], [MessageLock]) in
            defer {
                state.completions.removeAll(keepingCapacity: true)
                state.locks.removeAll(keepingCapacity: true)
            }
            return (state.completions, state.locks)
        }
        guard !batch.isEmpty else {
            idle.signal()
            return
        }
        var backoff = Duration.milliseconds(50)
        while true {
            do {
                let counted = try await database.withConnection { connection in
                    try await CompletionQuery.complete(batch, on: connection)
                }
                if counted.count < batch.count {
                    logger.warning("completions ignored: the lease had passed to another worker", metadata: ["count": "\(batch.count - counted.count)"])
                }
                break
            } catch {
                WorkerMetrics.postgresError()
                logger.warning("writing completions failed; retrying", metadata: ["error": "\(error)", "count": "\(batch.count)"])
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(2))
                if Task.isCancelled { return }
            }
        }
        // Only now that the results are recorded may another process dispatch these messages.
        if let coordinator { await coordinator.release(locks) }
        wakeup.signal()
        idle.signal()
    }

    /// After the claim loop stops: wait for in-flight dispatches within the grace period, hand
    /// back what is left, and write every completion.
    private func drain() async {
        let deadline = ContinuousClock.now + configuration.gracePeriod
        while state.withLockedValue({ $0.inFlight > 0 }) && ContinuousClock.now < deadline {
            await idle.wait(timeout: .milliseconds(50))
        }
        let leftovers = state.withLockedValue { state -> [ClaimedJob] in Array(state.running.values) }
        // Some may be mid-dispatch: `worker_lost` marks them maybe sent.
        for job in leftovers {
            finish(job, .defer_(after: .zero, code: .workerLost, message: "worker shut down before the dispatch finished"))
        }
        if !leftovers.isEmpty {
            logger.warning("handing back unfinished jobs", metadata: ["count": "\(leftovers.count)"])
        }
        await flush()
    }

    // MARK: Lease

    /// Registers (again), and starts counting the lease from before the statement was sent.
    private func register() async throws {
        let sent = ContinuousClock.now
        try await database.withConnection { connection in
            try await WorkerRegistry.register(id: id, name: configuration.name, host: ProcessInfo.processInfo.hostName,
                                              pid: ProcessInfo.processInfo.processIdentifier, lease: configuration.lease, on: connection)
        }
        leaseRenewed(sentAt: sent)
    }

    /// The database set the lease to `lease` from when it ran the statement, sent at `sent`.
    private func leaseRenewed(sentAt sent: ContinuousClock.Instant) {
        state.withLockedValue { $0.leaseValidUntil = sent + configuration.lease }
    }

    /// Whether the lease is certain to hold a while yet (a tenth of it: time for a dispatch to
    /// reach its engine). Heartbeats come every third of the lease, so one that fails is not
    /// enough to stop a worker; two in a row are.
    private func holdsLease() -> Bool {
        ContinuousClock.now + configuration.lease / 10 < state.withLockedValue { $0.leaseValidUntil }
    }

    private func heartbeatLoop() async {
        while !Task.isCancelled {
            guard (try? await Task.sleep(for: configuration.lease / 3)) != nil else { return }
            do {
                let inFlight = state.withLockedValue { $0.inFlight }
                WorkerMetrics.inFlight(inFlight)
                if let gauges = try? await database.withConnection({ try await QueueGauges.read(on: $0) }) {
                    WorkerMetrics.queue(depth: gauges.queued, oldestSeconds: gauges.oldestQueuedSeconds)
                }
                let sent = ContinuousClock.now
                let alive = try await database.withConnection { connection in
                    try await WorkerRegistry.heartbeat(id: id, lease: configuration.lease, inFlight: inFlight, on: connection)
                }
                if alive {
                    leaseRenewed(sentAt: sent)
                } else {
                    // The jobs it holds are (or are about to be) another worker's: let them go
                    // without dispatching them. Those mid-dispatch may have arrived (`worker_lost`).
                    let held = state.withLockedValue { Array($0.running.values) }
                    for job in held {
                        finish(job, .defer_(after: .zero, code: .workerLost, message: "this worker's lease lapsed; its jobs went to others"))
                    }
                    logger.error("this worker's lease lapsed (heartbeats did not get through): its jobs went back to the queue; re-registering",
                                 metadata: ["count": "\(held.count)"])
                    try await register()
                }
            } catch {
                logger.warning("heartbeat failed", metadata: ["error": "\(error)"])
            }
        }
    }

    private func pruneLoop(every interval: Duration) async {
        while !Task.isCancelled {
            guard (try? await Task.sleep(for: interval)) != nil else { return }
            do {
                let report = try await Maintenance.prune(configuration.retention, in: database)
                if report.jobs + report.events + report.lanes > 0 {
                    logger.info("pruned", metadata: ["jobs": "\(report.jobs)", "events": "\(report.events)", "lanes": "\(report.lanes)"])
                }
            } catch {
                logger.warning("prune failed", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Every 10 s, vacuums the queue tables whose dead rows passed their threshold (one worker at
    /// a time; see `Maintenance.vacuumIfNeeded`). Runs wherever pruning does.
    private func vacuumLoop() async {
        while !Task.isCancelled {
            guard (try? await Task.sleep(for: .seconds(10))) != nil else { return }
            do {
                let vacuumed = try await Maintenance.vacuumIfNeeded(in: database)
                if !vacuumed.isEmpty {
                    logger.debug("vacuumed", metadata: ["tables": "\(vacuumed.joined(separator: ","))"])
                }
            } catch {
                logger.warning("vacuum failed", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Engine status checks in flight at once, per worker.
    static let healthChecksAtOnce = 16

    /// Polls the engines of sessions due for a check; see `SessionHealth`.
    private func healthLoop() async {
        while !Task.isCancelled {
            do {
                let due = try await database.withConnection { connection in
                    try await SessionHealth.due(every: configuration.healthInterval, on: connection)
                }
                // A few checks at a time: a thousand sessions due at once must not become a thousand
                // concurrent tasks and requests.
                let statuses = await withTaskGroup(of: (String, SessionHealth.Status)?.self) { group in
                    var next = due.makeIterator()
                    func checkNext() {
                        guard let session = next.next() else { return }
                        group.addTask { await self.engineStatus(of: session).map { (session, $0) } }
                    }
                    for _ in 0..<Self.healthChecksAtOnce { checkNext() }
                    var statuses: [(String, SessionHealth.Status)] = []
                    while let result = await group.next() {
                        if let result { statuses.append(result) }
                        checkNext()
                    }
                    return statuses
                }
                try await database.withConnection { connection in
                    try await SessionHealth.record(statuses.map { (session: $0.0, status: $0.1) }, on: connection)
                }
                for (session, status) in statuses where status != .connected {
                    logger.info("session not connected; its jobs wait", metadata: ["session.id": "\(session)", "engine.status": "\(status.rawValue)"])
                }
            } catch {
                logger.warning("session health check failed", metadata: ["error": "\(error)"])
            }
            guard (try? await Task.sleep(for: min(configuration.healthInterval / 2, .seconds(5)))) != nil else { return }
        }
    }

    /// Applies receipts that arrived before their job's completion was written (see `ReceiptStore`).
    private func receiptsLoop() async {
        while !Task.isCancelled {
            guard (try? await Task.sleep(for: .seconds(2))) != nil else { return }
            do {
                try await ReceiptStore.applyPending(in: database)
            } catch {
                logger.warning("applying waiting receipts failed", metadata: ["error": "\(error)"])
            }
        }
    }

    /// What the session's engine says, or nil when it cannot be asked (the status stays as it
    /// was: a slow answer is not a disconnected session, and a dispatch to an engine that is down
    /// fails and is retried anyway).
    private func engineStatus(of session: String) async -> SessionHealth.Status? {
        do {
            switch try await engines.context(for: session).engine.status(session: session) {
            // A restricted account is connected; its first send gets the 463 that restricts the session.
            case .connected, .restricted: return .connected
            case .connecting: return .connecting
            case .disconnected: return .disconnected
            }
        } catch {
            logger.debug("session status unknown", metadata: ["session.id": "\(session)", "error": "\(error)"])
            return nil
        }
    }

    private func rescueLoop() async {
        let interval = min(configuration.lease / 3, .seconds(5))
        while !Task.isCancelled {
            guard (try? await Task.sleep(for: interval)) != nil else { return }
            do {
                let rescued = try await database.withConnection { connection in
                    try await RescueQuery.rescue(on: connection)
                }
                if rescued > 0 {
                    WorkerMetrics.rescued(rescued)
                    logger.warning("requeued jobs of a worker whose lease lapsed", metadata: ["count": "\(rescued)"])
                    wakeup.signal()
                }
            } catch {
                logger.warning("rescue failed", metadata: ["error": "\(error)"])
            }
        }
    }
}
