import Coordination
import Engines
import Foundation
import JobDispatch
import NIOConcurrencyHelpers
import OutboxCore
import OutboxStore

/// Dispatching: each claimed run's jobs (a slot of a session: one or more of its chats' runs), one
/// after another, each prepared, admitted, performed and reported on its own.
extension Worker {
    /// A run without the jobs the preflight refused (only edits and revokes, each its lane's only
    /// job in the run): each is reported, and anything of its chat behind it held back; nil when
    /// nothing is left to send.
    func withoutRefused(_ run: [ClaimedJob], verdict: Preflight.Verdict) -> [ClaimedJob]? {
        guard run.contains(where: { verdict.refused[$0.id] != nil }) else { return run }
        var kept: [ClaimedJob] = []
        var stopped: (chat: String, outcome: Outcome)?
        for job in run {
            if let stop = stopped, stop.chat == job.chat {
                hold([job][...], behind: stop.outcome)
            } else if let refusal = verdict.refused[job.id] {
                report(job, refusal)
                stopped = (job.chat, refusal)
            } else {
                kept.append(job)
            }
        }
        return kept.isEmpty ? nil : kept
    }

    /// Prepares each run's first job; admits and dispatches those of engines inside the process at
    /// once, and queues those of engine servers at their server's gate, where each is admitted only
    /// when a connection is free for it. The rest of each run follows its first job (`goOn`).
    func dispatch(_ runs: [[ClaimedJob]], targets: [Int64: String], sessions: [String: SessionRecord]) async {
        var ready: [(first: PreparedJob, rest: ArraySlice<ClaimedJob>)] = []
        var refused: [(outcome: Outcome, chat: String, rest: ArraySlice<ClaimedJob>)] = []
        for run in runs {
            let job = run[0]
            switch await dispatcher.prepare(job, engineTarget: targets[job.id], settings: sessions[job.sessionID]) {
            case .success(let prepared): ready.append((prepared, run.dropFirst()))
            case .failure(let refusal):
                report(job, refusal.outcome)
                if run.count > 1 { refused.append((refusal.outcome, job.chat, run.dropFirst())) }
            }
        }
        let local = ready.filter { $0.first.context.engine.host == nil }
        await withDiscardingTaskGroup { dispatches in
            for (outcome, chat, rest) in refused {
                dispatches.addTask { await self.goOn(rest, after: chat, outcome, targets: targets, sessions: sessions) }
            }
            for ((prepared, rest), admission) in zip(local, await dispatcher.admit(local.map(\.first))) {
                switch admission {
                case .success(let lock):
                    dispatches.addTask {
                        let outcome = await self.perform(prepared, lock: lock)
                        await self.goOn(rest, after: prepared.job.chat, outcome, targets: targets, sessions: sessions)
                    }
                case .failure(let wait):
                    report(prepared.job, wait.outcome)
                    dispatches.addTask { await self.goOn(rest, after: prepared.job.chat, wait.outcome, targets: targets, sessions: sessions) }
                }
            }
            for (prepared, rest) in ready {
                guard let host = prepared.context.engine.host else { continue }
                // The run keeps its place at the gate while it goes on: one connection, one send at a time.
                let work: DispatchGate.Work = {
                    let outcome = await self.admitAndPerform(prepared)
                    await self.goOn(rest, after: prepared.job.chat, outcome, targets: targets, sessions: sessions)
                }
                if let runner = gates.gate(for: host).submit(work) { dispatches.addTask(operation: runner) }
            }
        }
    }

    /// Sends the rest of a run, one job after another, after its first job (of `chat`) ended with
    /// `outcome` (nil: handed back). A chat whose job must run again gives back the rest of its
    /// jobs; a hand-back, a wait of the whole session or a lost job gives back all that is left
    /// (`RunProgress`), and so does a worker that is stopping or past its lease.
    private func goOn(_ rest: ArraySlice<ClaimedJob>, after chat: String, _ outcome: Outcome?,
                      targets: [Int64: String], sessions: [String: SessionRecord]) async {
        var progress = RunProgress()
        guard progress.note(outcome, chat: chat) else { return hold(rest, behind: outcome) }
        for index in rest.indices {
            // A worker shutting down, or cut off past its lease, starts nothing more of a run.
            guard lease.holds, !Task.isCancelled, !state.withLockedValue({ $0.stopping }) else { return hold(rest[index...], behind: nil) }
            let job = rest[index]
            if let stopped = progress.stopped(job.chat) {
                hold(rest[index...index], behind: stopped)
                continue
            }
            let outcome: Outcome?
            switch await dispatcher.prepare(job, engineTarget: targets[job.id], settings: sessions[job.sessionID]) {
            case .success(let prepared): outcome = await admitAndPerform(prepared)
            case .failure(let refusal):
                report(job, refusal.outcome)
                outcome = refusal.outcome
            }
            guard progress.note(outcome, chat: job.chat) else { return hold(rest[(index + 1)...], behind: outcome) }
        }
    }

    /// Gives back jobs of a run behind one that ended with `outcome` (nil: it was handed back
    /// unsent), spending no attempt: they wait as long as it does (`Outcome.heldBack`).
    func hold(_ jobs: ArraySlice<ClaimedJob>, behind outcome: Outcome?) {
        let heldBack = outcome?.heldBack ?? .defer_(after: .zero, code: .engineError, message: "a message sent before it in the same run went back to the queue unsent")
        for job in jobs { finish(job, heldBack) }
    }

    /// Admits and performs one job; nil when it was handed back before (nothing done).
    private func admitAndPerform(_ prepared: PreparedJob) async -> Outcome? {
        guard state.withLockedValue({ $0.held(prepared.job)?.life.mayStart ?? false }) else { return nil }
        switch await dispatcher.admit([prepared])[0] {
        case .success(let lock): return await perform(prepared, lock: lock)
        case .failure(let wait):
            report(prepared.job, wait.outcome)
            return wait.outcome
        }
    }

    /// Calls the engine and reports what happened; returns the outcome reported.
    private func perform(_ prepared: PreparedJob, lock: MessageLock?) async -> Outcome {
        let job = prepared.job
        // A worker cut off from the database past its lease no longer owns its jobs, and a job
        // handed back at shutdown is no longer this worker's to send.
        let holds = lease.holds
        let started = state.withLockedValue { state -> Bool in
            guard holds, state.held(job) != nil, state.running[job.id]?.life.start() == true else { return false }
            state.running[job.id]?.lock = lock
            return true
        }
        guard started else {
            let outcome = Outcome.defer_(after: .zero, code: .engineError, message: "this worker could not start the dispatch (lease or shutdown); the job goes back to the queue")
            finish(job, outcome, lock: lock)
            return outcome
        }
        // Asked again right before the send: a reconciliation (or a pause) may outlast the lease.
        let lease = self.lease
        let result = await dispatcher.perform(prepared, lock: lock, stillOwned: { lease.holds })
        if result.reconciled { state.withLockedValue { $0.reconciled += 1 } }
        report(job, result.outcome, lock: lock, engineMessageID: result.engineMessageID)
        return result.outcome
    }

    /// Logs a job's outcome (one line, with job, session and organization ids) and finishes it.
    func report(_ job: ClaimedJob, _ outcome: Outcome, lock: MessageLock? = nil, engineMessageID: String? = nil) {
        OutcomeLog.log(outcome, of: job, logger: logger)
        WorkerMetrics.outcome(outcome, kind: job.kind)
        finish(job, outcome, lock: lock, engineMessageID: engineMessageID)
    }

    /// Buffers the job's completion, unless it was handed back already (then only its lock goes).
    private func finish(_ job: ClaimedJob, _ outcome: Outcome, lock: MessageLock? = nil, engineMessageID: String? = nil) {
        let (accepted, roomAgain) = state.withLockedValue { state -> (Bool, Bool) in
            guard var held = state.held(job), held.life.finish(outcome) != nil else { return (false, false) }
            let full = state.running.count >= configuration.concurrency
            state.running[job.id] = nil
            if case .defer_ = outcome {} else { state.dispatched += 1 }
            return (true, full)
        }
        // A claim loop that stopped for want of room claims again.
        if roomAgain { wakeup.signal() }
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
}
