import OutboxStore
import Synchronization

/// Which events a stream wants, beyond its organization.
public struct EventFilter: Sendable, Equatable {
    /// Only these sessions; nil for all.
    public var sessions: Set<String>?
    /// Only these statuses; nil for all.
    public var statuses: Set<String>?

    public init(sessions: Set<String>? = nil, statuses: Set<String>? = nil) {
        self.sessions = sessions
        self.statuses = statuses
    }

    public func matches(_ event: StatusEvent) -> Bool {
        event.isMessageStatus
            && (sessions?.contains(event.session) ?? true)
            && (statuses?.contains(event.status) ?? true)
    }
}

/// One client's live events: a bounded buffer the hub fills and the client's writer drains.
///
/// The hub never waits for a subscriber: when the buffer is full the subscription ends
/// (`.overflow`), and the writer is cancelled even in the middle of a write, so the client sees its
/// stream close and reconnects with the last id it received.
public final class Subscription: Sendable {
    public enum End: Sendable, Equatable {
        /// The client fell `capacity` events behind.
        case overflow
        /// The client went away, or its request ended.
        case closed
        /// The hub stopped (the process is shutting down).
        case shutdown
    }

    /// What the writer gets from `next()`.
    public struct Delivery: Sendable {
        public var events: [StatusEvent]
        /// The hub's keep-alive tick passed since the last delivery.
        public var keepAlive: Bool
    }

    let id: UInt64
    let org: String
    let filter: EventFilter
    let capacity: Int

    private struct State {
        var events: [StatusEvent] = []
        var keepAlive = false
        /// Live events up to this cursor were already replayed (or the client had them).
        var skipThrough: EventCursor
        var end: End?
        var waiter: CheckedContinuation<Delivery?, Never>?
        var endWaiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state: Mutex<State>

    init(id: UInt64, org: String, filter: EventFilter, capacity: Int, skipThrough: EventCursor) {
        self.id = id
        self.org = org
        self.filter = filter
        self.capacity = capacity
        self.state = Mutex(State(skipThrough: skipThrough))
    }

    /// How the subscription ended, if it has.
    public var end: End? { state.withLock { $0.end } }

    /// Offers live events (already the subscriber's organization, in id order). Returns false when
    /// the buffer overflowed: the subscription has ended and the hub drops it.
    func offer(_ batch: [StatusEvent]) -> Bool {
        let wanted = batch.filter(filter.matches)
        guard !wanted.isEmpty else { return true }
        return state.withLock { state -> Bool in
            guard state.end == nil else { return false }
            let fresh = wanted.filter { $0.cursor > state.skipThrough }
            guard !fresh.isEmpty else { return true }
            if state.events.count + fresh.count > capacity {
                finish(.overflow, &state)
                return false
            }
            state.events += fresh
            wake(&state)
            return true
        }
    }

    func tick() {
        state.withLock { state in
            guard state.end == nil else { return }
            state.keepAlive = true
            wake(&state)
        }
    }

    /// Ends the subscription; what is buffered is dropped.
    public func finish(_ end: End) {
        state.withLock { finish(end, &$0) }
    }

    /// Waits for events or a keep-alive tick; nil once the subscription has ended (or the task is cancelled).
    public func next() async -> Delivery? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Delivery?, Never>) in
                state.withLock { state in
                    if state.end != nil || Task.isCancelled {
                        continuation.resume(returning: nil)
                    } else if !state.events.isEmpty || state.keepAlive {
                        continuation.resume(returning: take(&state))
                    } else {
                        precondition(state.waiter == nil, "one reader per subscription")
                        state.waiter = continuation
                    }
                }
            }
        } onCancel: {
            state.withLock { state in
                state.waiter.take()?.resume(returning: nil)
            }
        }
    }

    /// Returns once the subscription has ended.
    public func ended() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            state.withLock { state in
                if state.end != nil { continuation.resume() } else { state.endWaiters.append(continuation) }
            }
        }
    }

    private func take(_ state: inout State) -> Delivery {
        defer {
            state.events.removeAll(keepingCapacity: true)
            state.keepAlive = false
        }
        return Delivery(events: state.events, keepAlive: state.keepAlive)
    }

    private func wake(_ state: inout State) {
        if let waiter = state.waiter.take() { waiter.resume(returning: take(&state)) }
    }

    private func finish(_ end: End, _ state: inout State) {
        guard state.end == nil else { return }
        state.end = end
        state.events = []
        state.waiter.take()?.resume(returning: nil)
        for waiter in state.endWaiters { waiter.resume() }
        state.endWaiters = []
    }
}
