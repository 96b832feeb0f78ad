import NIOConcurrencyHelpers

/// A wake-up signal for loops that otherwise poll.
///
/// - `signal()` wakes every task waiting at that moment.
/// - A signal while nobody waits is kept, and many such signals coalesce into one: the next
///   `wait` returns at once and consumes it; the one after waits again.
/// - `wait(timeout:)` returns on a signal, at its timeout, or as soon as the waiting task is
///   cancelled, whichever comes first. Nothing it starts outlives it: the timeout runs in a child
///   task that is cancelled when the wait ends.
final class Wakeup: Sendable {
    private enum Entry {
        case waiting(CheckedContinuation<Void, Never>)
        /// Cancelled before it started waiting: it must not wait.
        case cancelled
    }

    private struct State {
        var pending = false
        var entries: [UInt64: Entry] = [:]
        var nextID: UInt64 = 0
    }

    private let state = NIOLockedValueBox(State())

    func signal() {
        let woken = state.withLockedValue { state -> [CheckedContinuation<Void, Never>] in
            var woken: [CheckedContinuation<Void, Never>] = []
            for (id, entry) in state.entries {
                if case .waiting(let continuation) = entry {
                    woken.append(continuation)
                    state.entries[id] = nil
                }
            }
            if woken.isEmpty { state.pending = true }
            return woken
        }
        for continuation in woken { continuation.resume() }
    }

    /// Tasks waiting now (for tests).
    var waiterCount: Int {
        state.withLockedValue { $0.entries.values.filter { if case .waiting = $0 { true } else { false } }.count }
    }

    /// Returns on the next signal (or a pending one), after `timeout`, or when the task is cancelled.
    func wait(timeout: Duration) async {
        let id = state.withLockedValue { state in
            defer { state.nextID &+= 1 }
            return state.nextID
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.waitForSignal(id) }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            group.cancelAll()
        }
    }

    private func waitForSignal(_ id: UInt64) async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLockedValue { state -> Bool in
                    if case .cancelled = state.entries[id] {
                        state.entries[id] = nil
                        return true
                    }
                    if state.pending {
                        state.pending = false
                        return true
                    }
                    state.entries[id] = .waiting(continuation)
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            let waiting = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
                switch state.entries[id] {
                case .waiting(let continuation):
                    state.entries[id] = nil
                    return continuation
                case .cancelled:
                    return nil
                case nil:
                    // Not waiting yet (or already woken, and then the mark is removed below).
                    state.entries[id] = .cancelled
                    return nil
                }
            }
            waiting?.resume()
        }
        state.withLockedValue { state in
            if case .cancelled = state.entries[id] { state.entries[id] = nil }
        }
    }
}
