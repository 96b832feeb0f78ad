import NIOConcurrencyHelpers
import Testing
import JobDispatch

@Suite("Dispatch gate")
struct DispatchGateTests {
    /// 200 dispatches to one engine server through a gate of 4: never more than 4 at once, no more
    /// than 4 runner tasks, every one runs once, taken in the order submitted.
    ///
    /// Taken in order, they need not record themselves in order: a runner can be held between
    /// taking one and running it while the other three go on (a loaded CI rehearsal saw 135 after
    /// 138). What taking in order does promise: when one runs, every dispatch submitted before it
    /// was taken already, and at most the 3 held by the other runners have yet to run.
    @Test func atMostPermitsRunAtOnceAndAllRunInOrder() async throws {
        let gate = DispatchGate(permits: 4)
        struct Tally { var running = 0, most = 0, order: [Int] = [] }
        let tally = NIOLockedValueBox(Tally())
        var runners = 0
        await withDiscardingTaskGroup { group in
            for index in 0..<200 {
                let runner = gate.submit {
                    tally.withLockedValue { $0.running += 1; $0.most = max($0.most, $0.running); $0.order.append(index) }
                    try? await Task.sleep(for: .milliseconds(1))
                    tally.withLockedValue { $0.running -= 1 }
                }
                if let runner {
                    runners += 1
                    group.addTask(operation: runner)
                }
            }
        }
        let final = tally.withLockedValue { $0 }
        #expect(runners == 4)
        #expect(final.most == 4)
        #expect(final.order.sorted() == Array(0..<200), "each runs once")
        let overtaking = final.order.enumerated().filter { position, index in
            final.order[(position + 1)...].filter { $0 < index }.count > 3
        }.map(\.element)
        #expect(overtaking.isEmpty, "ran while more than 3 dispatches submitted before them had yet to run: \(overtaking.prefix(5))")
        #expect(gate.waitingCount == 0)
    }

    /// A cancelled runner (the worker shutting down) starts nothing more; its waiting work stays
    /// for the worker's shutdown to hand back.
    @Test func aCancelledRunnerStartsNoMoreWork() async throws {
        let gate = DispatchGate(permits: 1)
        let started = NIOLockedValueBox(0)
        let task = Task {
            await withDiscardingTaskGroup { group in
                for _ in 0..<10 {
                    if let runner = gate.submit({
                        started.withLockedValue { $0 += 1 }
                        try? await Task.sleep(for: .milliseconds(50))
                    }) {
                        group.addTask(operation: runner)
                    }
                }
            }
        }
        try await Task.sleep(for: .milliseconds(20))
        task.cancel()
        await task.value
        #expect(started.withLockedValue { $0 } == 1)
        #expect(gate.waitingCount == 9)
    }
}
