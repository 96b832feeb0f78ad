import Coordination
import Engines
import Foundation
import JobDispatch
import Logging
import NIOConcurrencyHelpers
import OutboxCore
import OutboxStore
import PostgresClient

/// One worker process's dispatch loop.
///
/// It claims batches of ready jobs (waking on NOTIFY, polling as a fallback) and checks edits and
/// revokes in the claim's own transaction, dispatches each job through `Dispatcher`, and hands its
/// result to the `CompletionWriter`, fenced by worker id and attempt. The `LeaseKeeper` renews the
/// lease on its own connection; the maintenance services (rescue, prune, vacuum, session health,
/// receipts, gauges) run beside the loop. `shutdown()` — or cancellation, or a failing sibling
/// service — stops claiming, lets in-flight dispatches finish within the grace period, hands back
/// the rest without spending their attempt, writes every result it has, and returns.
public final class Worker: Sendable {
    public let id: UUID
    public let configuration: WorkerConfiguration
    private let database: PostgresDatabase
    private let listenerConfiguration: PostgresConfiguration
    private let engines: EngineDirectory
    private let dispatcher: Dispatcher
    private let coordinator: Coordinator?
    private let lease: LeaseKeeper
    private let writer: CompletionWriter
    private let logger: Logger

    private struct Held {
        var job: ClaimedJob
        var life = JobLifecycle()
        var lock: MessageLock?
    }

    private struct State {
        var running: [Int64: Held] = [:]
        var stopping = false
        var dispatched = 0
        var reconciled = 0
    }

    private let state = NIOLockedValueBox(State())
    private let wakeup = Wakeup()
    private let finished = Wakeup()
    private let gates = DispatchGates(permits: EngineHosts.connectionsPerHost)

    public init(id: UUID = UUID(), configuration: WorkerConfiguration, database: PostgresDatabase,
                listenerConfiguration: PostgresConfiguration, engines: EngineDirectory, coordinator: Coordinator?, logger: Logger) {
        var logger = logger
        logger[metadataKey: "worker.id"] = "\(id)"
        self.id = id
        self.configuration = configuration
        self.database = database
        self.listenerConfiguration = listenerConfiguration
        self.engines = engines
        self.coordinator = coordinator
        self.logger = logger
        self.dispatcher = Dispatcher(engines: engines, coordinator: coordinator, database: database, retry: configuration.retry,
                                     lockHolder: id.lockHolder, landingBound: configuration.requestTimeout + .seconds(5), logger: logger)
        self.lease = LeaseKeeper(id: id, name: configuration.name, lease: configuration.lease, configuration: database.configuration, logger: logger)
        let wakeup = self.wakeup
        self.writer = CompletionWriter(database: database, coordinator: coordinator, window: configuration.completionWindow, logger: logger) {
            wakeup.signal()
        }
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
        try await lease.register(patience: configuration.startPatience, stopping: { self.state.withLockedValue { $0.stopping } })
        logger.info("worker started", metadata: ["worker.name": "\(configuration.name)", "concurrency": "\(configuration.concurrency)"])
        // The writer runs outside the task tree: cancelling the worker must never cancel a write.
        let writer = self.writer
        let writing = Task { await writer.run() }
        let listener = PostgresListener(configuration: listenerConfiguration, channels: ["wa_outbox_jobs"], logger: logger)
        var shutdownStarted = ContinuousClock.now
        await withTaskCancellationHandler {
            await withDiscardingTaskGroup { group in
                group.addTask { for await _ in listener.events() { self.wakeup.signal() } }
                group.addTask {
                    await self.lease.run(inFlight: { let count = self.state.withLockedValue { $0.running.count }; WorkerMetrics.inFlight(count); return count }, locks: { self.heldLocks },
                                         coordinator: self.coordinator, lost: { self.handBackAll(reason: "this worker's lease lapsed; its jobs went to others") })
                }
                for service in services() { group.addTask { await service.run(logger: self.logger) } }
                await claimLoop(&group)
                shutdownStarted = ContinuousClock.now
                await waitForDispatches(until: shutdownStarted + configuration.gracePeriod * 3 / 4)
                listener.stop()
                group.cancelAll()
            }
        } onCancel: {
            self.shutdown()
        }
        _ = await Task { await writer.finish(by: shutdownStarted + configuration.gracePeriod) }.value
        await writing.value
        await lease.deregister()
        logger.info("worker stopped", metadata: ["dispatched": "\(dispatchedCount)"])
    }

    private func services() -> [any MaintenanceService] {
        var services: [any MaintenanceService] = [
            Rescuer(interval: min(configuration.lease / 3, .seconds(5)), database: database, coordinator: coordinator, logger: logger) { self.wakeup.signal() },
            SessionHealthPoller(every: configuration.healthInterval, engines: engines, database: database, logger: logger),
            ReceiptApplier(database: database),
            QueueGaugeReader(interval: configuration.lease / 3, database: database),
        ]
        if let interval = configuration.pruneInterval {
            services += [Pruner(interval: interval, retention: configuration.retention, database: database, logger: logger),
                         Vacuumer(database: database, logger: logger)] as [any MaintenanceService]
        }
        return services
    }

    // MARK: Claiming

    private func claimLoop(_ group: inout DiscardingTaskGroup) async {
        while !state.withLockedValue({ $0.stopping }) && !Task.isCancelled {
            guard lease.holds else {
                // Its jobs may be handed to others at any moment: take none until a heartbeat
                // gets through (the lease keeper logs why).
                await wakeup.wait(timeout: configuration.pollInterval)
                continue
            }
            let free = configuration.concurrency - state.withLockedValue { $0.running.count }
            var claimed = 0
            var requested = 0
            if free > 0 {
                requested = min(configuration.batchSize, free)
                let batch: ClaimQuery.Batch
                let verdict: Preflight.Verdict
                do {
                    (batch, verdict) = try await claim(limit: requested)
                } catch {
                    WorkerMetrics.postgresError()
                    logger.warning("claim failed; will retry", metadata: ["error": "\(error)"])
                    await wakeup.wait(timeout: configuration.pollInterval)
                    continue
                }
                claimed = batch.jobs.count
                let go = batch.jobs.filter { job in
                    guard let refusal = verdict.refused[job.id] else { return true }
                    report(job, refusal)
                    return false
                }
                // Preparing and admitting runs beside the next claim, in chunks, so the first
                // dispatches start while the rest of a large batch is still being admitted.
                for start in stride(from: 0, to: go.count, by: WorkerConfiguration.admissionChunk) {
                    let chunk = Array(go[start..<min(start + WorkerConfiguration.admissionChunk, go.count)])
                    group.addTask { await self.dispatch(chunk, targets: verdict.engineTargets, sessions: batch.sessions) }
                }
            }
            if claimed == requested && requested > 0 { continue }
            if configuration.exitWhenIdle, claimed == 0, state.withLockedValue({ $0.running.isEmpty }), writer.isEmpty, await !hasPendingWork() {
                logger.info("queue drained; exiting")
                shutdown()
                break
            }
            await wakeup.wait(timeout: configuration.pollInterval)
        }
    }

    /// Claims and checks edits and revokes in one transaction, so a failure anywhere leaves the
    /// jobs queued. If the commit's fate is unknown (the connection broke), the jobs are handed
    /// back through fenced completions, which do nothing if the claim did not commit.
    private func claim(limit: Int) async throws -> (ClaimQuery.Batch, Preflight.Verdict) {
        var taken: [ClaimedJob] = []
        do {
            let (batch, verdict) = try await database.withConnection { connection in
                try await connection.withTransaction { connection in
                    let batch = try await ClaimQuery.claim(workerID: id, limit: limit, on: connection)
                    taken = batch.jobs
                    try configuration.afterClaim?()
                    return (batch, try await Preflight.check(batch.jobs, on: connection))
                }
            }
            state.withLockedValue { state in
                for job in batch.jobs { state.running[job.id] = Held(job: job) }
            }
            return (batch, verdict)
        } catch {
            for job in taken {
                writer.add(Completion(jobID: job.id, claim: job.claim, workerID: id,
                                      outcome: .defer_(after: .zero, code: .engineError, message: "the claim did not complete")), releasing: nil)
            }
            throw error
        }
    }

    /// Whether `--exit-when-idle` must go on. When the check fails, the answer is yes.
    private func hasPendingWork() async -> Bool {
        do {
            try configuration.beforePendingCheck?()
            return try await QueueGauges.hasRunnableWork(in: database)
        } catch {
            logger.warning("cannot tell whether work is pending; going on", metadata: ["error": "\(error)"])
            return true
        }
    }

    // MARK: Dispatching

    /// Prepares each job; admits and dispatches those of engines inside the process at once, and
    /// queues those of engine servers at their server's gate, where each is admitted only when a
    /// connection is free for it.
    private func dispatch(_ jobs: [ClaimedJob], targets: [Int64: String], sessions: [String: SessionRecord]) async {
        var ready: [PreparedJob] = []
        for job in jobs {
            switch await dispatcher.prepare(job, engineTarget: targets[job.id], settings: sessions[job.sessionID]) {
            case .success(let prepared): ready.append(prepared)
            case .failure(let refusal): report(job, refusal.outcome)
            }
        }
        let local = ready.filter { $0.context.engine.host == nil }
        await withDiscardingTaskGroup { dispatches in
            for (prepared, admission) in zip(local, await dispatcher.admit(local)) {
                switch admission {
                case .success(let lock): dispatches.addTask { await self.perform(prepared, lock: lock) }
                case .failure(let wait): report(prepared.job, wait.outcome)
                }
            }
            for prepared in ready {
                guard let host = prepared.context.engine.host else { continue }
                let work: DispatchGate.Work = { await self.admitAndPerform(prepared) }
                if let runner = gates.gate(for: host).submit(work) { dispatches.addTask(operation: runner) }
            }
        }
    }

    private func admitAndPerform(_ prepared: PreparedJob) async {
        guard state.withLockedValue({ $0.running[prepared.job.id]?.life.mayStart ?? false }) else { return }
        switch await dispatcher.admit([prepared])[0] {
        case .success(let lock): await perform(prepared, lock: lock)
        case .failure(let wait): report(prepared.job, wait.outcome)
        }
    }

    private func perform(_ prepared: PreparedJob, lock: MessageLock?) async {
        let job = prepared.job
        // A worker cut off from the database past its lease no longer owns its jobs, and a job
        // handed back at shutdown is no longer this worker's to send.
        let holds = lease.holds
        let started = state.withLockedValue { state -> Bool in
            guard holds, state.running[job.id]?.life.start() == true else { return false }
            state.running[job.id]?.lock = lock
            return true
        }
        guard started else {
            finish(job, .defer_(after: .zero, code: .engineError, message: "this worker could not start the dispatch (lease or shutdown); the job goes back to the queue"), lock: lock)
            return
        }
        // Asked again right before the send: a reconciliation (or a pause) may outlast the lease.
        let lease = self.lease
        let result = await dispatcher.perform(prepared, lock: lock, stillOwned: { lease.holds })
        if result.reconciled { state.withLockedValue { $0.reconciled += 1 } }
        report(job, result.outcome, lock: lock, engineMessageID: result.engineMessageID)
    }

    /// Logs a job's outcome (one line, with job, session and organization ids) and finishes it.
    private func report(_ job: ClaimedJob, _ outcome: Outcome, lock: MessageLock? = nil, engineMessageID: String? = nil) {
        OutcomeLog.log(outcome, of: job, logger: logger)
        WorkerMetrics.outcome(outcome, kind: job.kind)
        finish(job, outcome, lock: lock, engineMessageID: engineMessageID)
    }

    /// Buffers the job's completion, unless it was handed back already (then only its lock goes).
    private func finish(_ job: ClaimedJob, _ outcome: Outcome, lock: MessageLock? = nil, engineMessageID: String? = nil) {
        let accepted = state.withLockedValue { state -> Bool in
            guard var held = state.running.removeValue(forKey: job.id), held.life.finish(outcome) != nil else { return false }
            if case .defer_ = outcome {} else { state.dispatched += 1 }
            return true
        }
        if accepted {
            // A sent message is never dispatched again: its lock just expires. Locks of jobs that
            // will run again are released once their completion is written.
            writer.add(Completion(jobID: job.id, claim: job.claim, workerID: id, outcome: outcome,
                                  engineMessageID: outcome == .succeeded ? engineMessageID : nil),
                       releasing: outcome == .succeeded ? nil : lock)
        } else if let lock, let coordinator, outcome != .succeeded {
            // Handed back already: a message that did go out keeps its lock until it expires.
            Task { await coordinator.release([lock]) }
        }
        finished.signal()
    }

    /// Hands back every job still held (its completion says whether it may have been sent).
    private func handBackAll(reason: String) {
        let handed = state.withLockedValue { state -> [(ClaimedJob, Outcome)] in
            defer { state.running.removeAll() }
            return state.running.values.compactMap { held in
                var life = held.life
                return life.handBack(reason: reason).map { (held.job, $0) }
            }
        }
        for (job, outcome) in handed {
            writer.add(Completion(jobID: job.id, claim: job.claim, workerID: id, outcome: outcome), releasing: nil)
        }
        if !handed.isEmpty { logger.warning("handing back jobs", metadata: ["count": "\(handed.count)", "reason": "\(reason)"]) }
    }

    /// Waits for in-flight dispatches until `deadline`, then hands back what is left.
    private func waitForDispatches(until deadline: ContinuousClock.Instant) async {
        while !state.withLockedValue({ $0.running.isEmpty }) && ContinuousClock.now < deadline {
            await finished.wait(timeout: .milliseconds(50))
        }
        handBackAll(reason: "worker shut down before the dispatch finished")
    }

    /// Dispatch locks of jobs at their engine or whose results wait to be written.
    private var heldLocks: [MessageLock] {
        state.withLockedValue { $0.running.values.compactMap(\.lock) } + writer.heldLocks
    }
}

extension UUID {
    /// The prefix of the dispatch-lock tokens of the worker with this id.
    var lockHolder: String { uuidString.lowercased() }
}
