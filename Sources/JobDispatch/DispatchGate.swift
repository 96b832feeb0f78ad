import DequeModule
import NIOConcurrencyHelpers

/// At most `permits` dispatches at once to one engine server; the others wait here as records.
///
/// A worker holds up to its concurrency (512) claimed jobs. Started as tasks, each waiting for one
/// of the HTTP client's connections to the server, a dispatch holds its task's frames and a queued
/// request (body, headers, deadline timer, the client's bookkeeping): about 17 kB each, 6–7 MB of
/// a worker's memory at 512. Here a waiting dispatch is one closure until a runner is free. Each
/// runner is a child task of the worker that started it, so shutting the worker down cancels it.
public final class DispatchGate: Sendable {
    public typealias Work = @Sendable () async -> Void

    private struct State {
        var runners = 0
        var waiting = Deque<Work>()
    }

    private let permits: Int
    private let state = NIOLockedValueBox(State())

    public init(permits: Int) {
        self.permits = permits
    }

    /// Queues `work`. Returns a runner for the caller to start as a child task when fewer than
    /// `permits` are running, nil when a running one will take it.
    public func submit(_ work: @escaping Work) -> (@Sendable () async -> Void)? {
        let start = state.withLockedValue { state -> Bool in
            if state.runners < permits {
                state.runners += 1
                return true
            }
            state.waiting.append(work)
            return false
        }
        guard start else { return nil }
        return { await self.run(first: work) }
    }

    /// Runs `first`, then waiting work, until none is left or the task is cancelled.
    private func run(first: @escaping Work) async {
        var work = first
        while true {
            await work()
            let next = state.withLockedValue { state -> Work? in
                guard !Task.isCancelled, let next = state.waiting.popFirst() else {
                    state.runners -= 1
                    return nil
                }
                return next
            }
            guard let next else { return }
            work = next
        }
    }

    /// Waiting work, for tests and shutdown logs.
    public var waitingCount: Int { state.withLockedValue { $0.waiting.count } }
}

/// The gates of the engine servers one worker dispatches to.
public final class DispatchGates: Sendable {
    private let gates = NIOLockedValueBox<[String: DispatchGate]>([:])
    private let permits: Int

    public init(permits: Int) {
        self.permits = permits
    }

    public func gate(for host: String) -> DispatchGate {
        gates.withLockedValue { gates in
            if let gate = gates[host] { return gate }
            let gate = DispatchGate(permits: permits)
            gates[host] = gate
            return gate
        }
    }
}
