import Coordination
import Logging
import NIOConcurrencyHelpers
import OutboxCore
import OutboxStore
import PostgresClient

/// Buffers completions and writes them in batches, one statement per batch.
///
/// Guarantee: a completion handed to `add` is written, or kept and retried until it is. A batch
/// whose write fails goes back to the front of the buffer; nothing is taken out of it for good
/// before its statement committed. Cancellation never drops a batch: the writer stops only when
/// `finish(by:)` has written everything or its deadline has passed, and then says how many
/// completions it could not write (their jobs are rescued once the lease lapses).
/// Dispatch locks of jobs that will run again are released only after their completion is written,
/// so no other process dispatches a message before its result is recorded.
final class CompletionWriter: Sendable {
    private struct State {
        var completions: [Completion] = []
        var locks: [MessageLock] = []
        var finishing = false
        /// Batches taken out of the buffer whose statement has not ended yet: `finish` waits for them.
        var writing = 0
        /// The size of the last batch taken: more than one means completions are arriving busily.
        var lastBatch = 0
    }

    private let state = NIOLockedValueBox(State())
    private let database: PostgresDatabase
    private let coordinator: Coordinator?
    private let window: Duration
    private let logger: Logger
    private let pending = Wakeup()
    /// Wakes the event streams after each write (the statement itself stays silent, so that
    /// several workers' writes commit together).
    private let notifier: WakeupNotifier
    /// Called after each write, with whether it may have left work claimable (a lane or a
    /// session's slot free again, `CompletionQuery.Written.readiedWork`) and when it began.
    private let written: @Sendable (_ readiedWork: Bool, _ began: ContinuousClock.Instant) -> Void

    init(database: PostgresDatabase, coordinator: Coordinator?, window: Duration, logger: Logger, written: @escaping @Sendable (_ readiedWork: Bool, _ began: ContinuousClock.Instant) -> Void) {
        self.database = database
        self.coordinator = coordinator
        self.window = window
        self.logger = logger
        self.written = written
        self.notifier = WakeupNotifier(database: database, channels: [WakeupNotifier.events], logger: logger)
    }

    /// Queues one completion; `lock` is released once it is written.
    func add(_ completion: Completion, releasing lock: MessageLock?) {
        state.withLockedValue { state in
            state.completions.append(completion)
            if let lock { state.locks.append(lock) }
        }
        pending.signal()
    }

    /// True when nothing waits to be written and no write is under way.
    var isEmpty: Bool { state.withLockedValue { $0.completions.isEmpty && $0.writing == 0 } }

    /// Dispatch locks of results not yet written (the lease keeper renews them).
    var heldLocks: [MessageLock] { state.withLockedValue { $0.locks } }

    /// Writes batches as they come until `finish(by:)` is called. While completions arrive faster
    /// than one at a time, each write waits a short window first so more gather; a lone completion
    /// (a quiet queue, a synchronous send waiting on it) is written at once. Runs in a task that
    /// nothing cancels; see `finish(by:)`.
    func run() async {
        var backoff = Duration.milliseconds(50)
        while !state.withLockedValue({ $0.finishing }) {
            await pending.wait(timeout: .milliseconds(200))
            if state.withLockedValue({ $0.lastBatch > 1 }) { try? await Task.sleep(for: window) }
            if await writeOnce() {
                backoff = .milliseconds(50)
            } else {
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(2))
            }
        }
    }

    /// Writes what is buffered, retrying until the buffer is empty or `deadline` passes. Returns
    /// the number of completions left unwritten (0 on success).
    func finish(by deadline: ContinuousClock.Instant) async -> Int {
        state.withLockedValue { $0.finishing = true }
        var backoff = Duration.milliseconds(50)
        while !isEmpty && ContinuousClock.now < deadline {
            if state.withLockedValue({ $0.completions.isEmpty }) {
                // The run loop's write is under way: its batch comes back here if it fails.
                try? await Task.sleep(for: .milliseconds(5))
                continue
            }
            if !(await writeOnce()) {
                try? await Task.sleep(for: min(backoff, max(deadline - ContinuousClock.now, .zero)))
                backoff = min(backoff * 2, .seconds(1))
            }
        }
        let left = state.withLockedValue { $0.completions.count }
        // (A write still under way at the deadline either commits or leaves its jobs to the rescue.)
        if left > 0 {
            logger.error("completions could not be written before the grace period ended; their jobs are rescued once this worker's lease lapses",
                         metadata: ["count": "\(left)"])
        }
        return left
    }

    /// Writes the whole buffer in one statement. True if it was written (or empty).
    private func writeOnce() async -> Bool {
        let (batch, locks) = state.withLockedValue { state in
            let taken = (state.completions, state.locks)
            state.completions.removeAll(keepingCapacity: true)
            state.locks.removeAll(keepingCapacity: true)
            if !taken.0.isEmpty { state.writing += 1 }
            state.lastBatch = taken.0.count
            return taken
        }
        guard !batch.isEmpty else { return true }
        defer { state.withLockedValue { $0.writing -= 1 } }
        let readiedWork: Bool
        let began = ContinuousClock.now
        do {
            let result = try await database.withConnection { try await CompletionQuery.write(batch, on: $0, notifyingAfterCommit: true) }
            notifier.signal()
            readiedWork = result.readiedWork
            if result.counted.count < batch.count {
                logger.warning("completions ignored: the lease had passed to another worker", metadata: ["count": "\(batch.count - result.counted.count)"])
            }
        } catch {
            WorkerMetrics.postgresError()
            logger.warning("writing completions failed; retrying", metadata: ["error": "\(error)", "count": "\(batch.count)"])
            state.withLockedValue { state in
                state.completions.insert(contentsOf: batch, at: 0)
                state.locks.insert(contentsOf: locks, at: 0)
            }
            return false
        }
        if let coordinator { await coordinator.release(locks) }
        written(readiedWork, began)
        return true
    }
}
