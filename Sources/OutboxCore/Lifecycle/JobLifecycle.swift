/// A claimed job's life inside one worker process, as a pure state machine.
///
/// ```
/// claimed ──start──▶ dispatching ──finish──▶ buffered ──written──▶ (gone)
///    │                     │
///    └────── handBack ─────┴──▶ buffered(defer)
/// ```
/// Guarantees it encodes, which the worker relies on:
/// - every claimed job ends with exactly one completion buffered for writing (a result, or a
///   hand-back that spends no attempt); nothing claimed is ever dropped;
/// - a job is dispatched at most once per claim: `start` is refused after a hand-back;
/// - a hand-back of a job whose engine call may have begun says so (`worker_lost` marks the job
///   maybe sent, so its next attempt looks for the message before sending it again);
/// - a buffered result is kept until it is written, whatever happens to the lease or the process.
public struct JobLifecycle: Sendable, Equatable {
    public enum Phase: Sendable, Equatable {
        case claimed
        case dispatching
        /// The result is known and waits to be written.
        case buffered(Outcome)
    }

    public private(set) var phase: Phase = .claimed

    public init() {}

    /// Whether the job may still be dispatched by this process.
    public var mayStart: Bool { phase == .claimed }

    /// Whether the job's completion is already buffered (a result, or a hand-back).
    public var isBuffered: Bool { if case .buffered = phase { true } else { false } }

    /// The engine call begins. False if the job was handed back meanwhile: do not call the engine.
    public mutating func start() -> Bool {
        guard mayStart else { return false }
        phase = .dispatching
        return true
    }

    /// The job's result (or a refusal before dispatch). Returns the outcome to buffer, or nil when
    /// a hand-back was buffered first: that one stands, and this result is dropped (its job may
    /// already be another worker's).
    public mutating func finish(_ outcome: Outcome) -> Outcome? {
        guard !isBuffered else { return nil }
        phase = .buffered(outcome)
        return outcome
    }

    /// Gives the job back without its result: at shutdown, or when the lease lapsed. Returns the
    /// completion to buffer (no attempt spent), or nil when a result is already buffered.
    public mutating func handBack(reason: String) -> Outcome? {
        let outcome: Outcome
        switch phase {
        case .claimed:
            outcome = .defer_(after: .zero, code: .engineError, message: reason)
        case .dispatching:
            outcome = .defer_(after: .zero, code: .workerLost, message: reason)
        case .buffered:
            return nil
        }
        phase = .buffered(outcome)
        return outcome
    }
}
