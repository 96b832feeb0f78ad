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
/// It claims batches of ready jobs (waking on NOTIFY, polling as a fallback), checks edits and
/// revokes against their windows, dispatches each job through `Dispatcher`, and hands its
/// result to the `CompletionWriter`, fenced by worker id and attempt. The `LeaseKeeper` renews the
/// lease on its own connection; the maintenance services (rescue, prune, vacuum, session health,
/// receipts, gauges) run beside the loop. `shutdown()` — or cancellation, or a failing sibling
/// service — stops claiming, lets in-flight dispatches finish within the grace period, hands back
/// the rest without spending their attempt, writes every result it has, and returns.
public final class Worker: Sendable {
    public let id: UUID
    public let configuration: WorkerConfiguration
    let database: PostgresDatabase
    private let listenerConfiguration: PostgresConfiguration
    private let engines: EngineDirectory
    let dispatcher: Dispatcher
    let coordinator: Coordinator?
    let lease: LeaseKeeper
    let writer: CompletionWriter
    let logger: Logger
    /// The runs this worker claims: as long as its default limits let sends go back to back.
    private let runLimit: RunLimit

    struct Held {
        var job: ClaimedJob
        var life = JobLifecycle()
        var lock: MessageLock?
    }

    struct State {
        var running: [Int64: Held] = [:]
        /// Claims whose answer never came; they may have committed (`recoverLostClaims`).
        var lostClaims: [LostClaim] = []
        var stopping = false
        var dispatched = 0
        var reconciled = 0
        /// When the listener last heard of new jobs.
        var lastNotification = ContinuousClock.Instant.now - .seconds(3_600)

        /// The job as this worker holds it under this claim. After a lease lapsed, its jobs were
        /// handed back and the same worker may have claimed them again: a task still going on from
        /// the earlier claim must not start, finish or send past the new claim's jobs.
        func held(_ job: ClaimedJob) -> Held? {
            guard let held = running[job.id], held.job.claim == job.claim else { return nil }
            return held
        }
    }

    let state = NIOLockedValueBox(State())
    let wakeup = Wakeup()
    let finished = Wakeup()
    let gates = DispatchGates(permits: EngineHosts.connectionsPerHost)

    public init(id: UUID = UUID(), configuration: WorkerConfiguration, database: PostgresDatabase,
                listenerConfiguration: PostgresConfiguration, engines: EngineDirectory, coordinator: Coordinator?, logger: Logger) {
        let defaults = coordinator == nil ? nil : engines.defaultLimits
        self.runLimit = RunLimit.runs(pacedByDefault: defaults?.pacing, defaultBurst: defaults?.burst)
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
        let state = self.state
        let exitWhenIdle = configuration.exitWhenIdle
        // The claim loop goes on after a write only if it may find something: at a few jobs a
        // second, claiming after every write found nothing every other claim. The write's own
        // snapshot misses a job enqueued while it ran, whose NOTIFY's claim may have found the
        // session still full or locked by the write: a NOTIFY during the write counts too. One
        // told to exit when idle checks after every write.
        self.writer = CompletionWriter(database: database, coordinator: coordinator, window: configuration.completionWindow, logger: logger) { readiedWork, began in
            if readiedWork || exitWhenIdle || state.withLockedValue({ $0.lastNotification >= began }) { wakeup.signal() }
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
                group.addTask {
                    for await _ in listener.events() {
                        self.state.withLockedValue { $0.lastNotification = .now }
                        self.wakeup.signal()
                    }
                }
                group.addTask {
                    await self.lease.run(inFlight: { let count = self.state.withLockedValue { $0.running.count }; WorkerMetrics.inFlight(count); return count }, locks: { self.heldLocks },
                                         coordinator: self.coordinator, lost: { self.handBackAll(reason: "this worker's lease lapsed; its jobs went to others") })
                }
                for service in services() { group.addTask { await service.run(logger: self.logger) } }
                await claimLoop(&group)
                await settleLostClaimsAtShutdown()
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

    /// Claims while there is room. `concurrency` bounds the jobs held, runs or not (each holds its
    /// payload until written); a claim asks for as many lanes, and looks for as many sessions, as
    /// the last claim suggests fill its budget of jobs, so chats with backlogs get whole runs,
    /// one-job chats many lanes, and sessions that send back to back whole slots.
    private func claimLoop(_ group: inout DiscardingTaskGroup) async {
        var jobsPerLane = 1
        var jobsPerSession = 1
        var candidates = CandidateScan()
        var plans = PlanRenewal()
        while !state.withLockedValue({ $0.stopping }) && !Task.isCancelled {
            if state.withLockedValue({ !$0.lostClaims.isEmpty }), await !recoverLostClaims() {
                await wakeup.wait(timeout: configuration.pollInterval)
                continue
            }
            guard lease.holds else {
                // Its jobs may be handed to others at any moment: take none until a heartbeat
                // gets through (the lease keeper logs why).
                await wakeup.wait(timeout: configuration.pollInterval)
                continue
            }
            let free = configuration.concurrency - state.withLockedValue { $0.running.count }
            var claimed = 0
            var full = false
            if free > 0 {
                let budget = min(configuration.batchSize, free)
                let lanes = (budget + jobsPerLane - 1) / jobsPerLane
                let sessions = (budget + jobsPerSession - 1) / jobsPerSession
                let scan = candidates.lanes(sessions: sessions, budget: budget)
                let batch: ClaimQuery.Batch
                let verdict: Preflight.Verdict
                do {
                    (batch, verdict) = try await claim(lanes: lanes, jobs: budget, sessions: sessions, candidates: scan)
                } catch {
                    WorkerMetrics.postgresError()
                    logger.warning("claim failed; will retry", metadata: ["error": "\(error)"])
                    await wakeup.wait(timeout: configuration.pollInterval)
                    continue
                }
                claimed = batch.jobs.count
                full = claimed == budget || batch.lanes == lanes
                // The next claim expects what this one found; after one that found nothing, it
                // looks for sessions widely again (the lanes it asks for stay as they were).
                if claimed > 0 {
                    if plans.observe(jobsTableBlocks: batch.jobsTableBlocks) { database.renewPlans() }
                    jobsPerLane = max(1, claimed / batch.lanes)
                    jobsPerSession = max(1, claimed / batch.sessions.count)
                    candidates.found(batch.candidateSessions, of: sessions, scanned: batch.candidateLanes, limit: scan)
                } else {
                    jobsPerSession = 1
                }
                let go = batch.runs.compactMap { withoutRefused($0, verdict: verdict) }
                // Preparing and admitting runs beside the next claim, in chunks, so the first
                // dispatches start while the rest of a large batch is still being admitted.
                for start in stride(from: 0, to: go.count, by: WorkerConfiguration.admissionChunk) {
                    let chunk = Array(go[start..<min(start + WorkerConfiguration.admissionChunk, go.count)])
                    group.addTask { await self.dispatch(chunk, targets: verdict.engineTargets, sessions: batch.sessions) }
                }
            }
            if full { continue }
            if configuration.exitWhenIdle, claimed == 0, state.withLockedValue({ $0.running.isEmpty }), writer.isEmpty, await !hasPendingWork() {
                logger.info("queue drained; exiting")
                shutdown()
                break
            }
            await wakeup.wait(timeout: configuration.pollInterval)
        }
    }

    /// Claims: `BEGIN`, the claim and `COMMIT` in one round trip, with the generic plans remade
    /// once the jobs table has grown (`PlanRenewal`): the claim's probes fix its shape whatever
    /// the parameters (`ClaimQuery`), and PostgreSQL, left to choose, planned it anew on every
    /// claim. Edits and revokes are then checked (`Preflight`, one index probe each). When a step
    /// after the commit fails, the jobs are handed back through fenced completions. When the
    /// connection breaks before the answer, the claim may have committed: it is kept as lost, and
    /// the claim loop hands back what it took before it claims again (`recoverLostClaims`).
    private func claim(lanes: Int, jobs: Int, sessions: Int, candidates: Int) async throws -> (ClaimQuery.Batch, Preflight.Verdict) {
        var taken: [ClaimedJob] = []
        let token = UUID()
        do {
            let claim = ClaimQuery.query(workerID: id, token: token, limit: lanes, runs: runLimit, jobs: jobs, sessions: sessions, candidates: candidates)
            let (batch, verdict) = try await database.withConnection { connection in
                let rows: PostgresRows
                do {
                    rows = try await connection.queryGenericPlan(claim)
                    if configuration.loseClaimAnswer?() == true {
                        connection.markBroken()
                        throw PostgresError(kind: .connection, message: "the claim's answer was lost (injected)")
                    }
                } catch where connection.isBroken {
                    throw LostClaim(token: token, backend: connection.backend, underlying: error)
                }
                let batch: ClaimQuery.Batch
                do {
                    batch = try ClaimQuery.batch(from: rows)
                } catch {
                    // Committed, but the jobs cannot be read: found by the token instead (no backend to end).
                    throw LostClaim(token: token, backend: .none, underlying: error)
                }
                taken = batch.jobs
                try configuration.afterClaim?()
                return (batch, try await Preflight.check(batch.jobs, on: connection))
            }
            state.withLockedValue { state in
                for job in batch.jobs { state.running[job.id] = Held(job: job) }
            }
            return (batch, verdict)
        } catch let lost as LostClaim {
            state.withLockedValue { $0.lostClaims.append(lost) }
            throw lost.underlying
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
