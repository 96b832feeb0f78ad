import Testing
@testable import Worker

/// The durations below are liveness bounds with a wide margin (a signal or cancellation arrives in
/// well under a millisecond; the bounds are seconds), never speed targets.
@Suite("Wake-up signal")
struct WakeupTests {
    /// Starts a task that waits (for at most `timeout`) and returns how long it waited.
    func waiter(_ wakeup: Wakeup, timeout: Duration) -> Task<Duration, Never> {
        Task {
            let start = ContinuousClock.now
            await wakeup.wait(timeout: timeout)
            return ContinuousClock.now - start
        }
    }

    /// Waits until `count` tasks wait on `wakeup`.
    func waitForWaiters(_ wakeup: Wakeup, _ count: Int) async throws {
        while wakeup.waiterCount < count { try await Task.sleep(for: .milliseconds(5)) }
    }

    @Test func oneSignalWakesEveryWaiter() async throws {
        let wakeup = Wakeup()
        let first = waiter(wakeup, timeout: .seconds(30))
        let second = waiter(wakeup, timeout: .seconds(30))
        try await waitForWaiters(wakeup, 2)
        wakeup.signal()
        let waited = [await first.value, await second.value]
        #expect(waited.allSatisfy { $0 < .seconds(10) }, "both waiters should wake on the signal; waited \(waited)")
    }

    @Test func aCancelledWaiterReturnsPromptly() async throws {
        let wakeup = Wakeup()
        let waiting = waiter(wakeup, timeout: .seconds(30))
        try await waitForWaiters(wakeup, 1)
        waiting.cancel()
        let waited = await waiting.value
        #expect(waited < .seconds(10), "a cancelled wait should return at once; waited \(waited)")
    }

    @Test func signalsWhileNobodyWaitsCoalesceIntoOneWakeUp() async throws {
        let wakeup = Wakeup()
        wakeup.signal()
        wakeup.signal()
        wakeup.signal()
        // The pending signal is consumed by the first wait, at once...
        #expect(await waiter(wakeup, timeout: .seconds(30)).value < .seconds(10))
        // ...and only by it: the next wait runs to its timeout.
        let waited = await waiter(wakeup, timeout: .milliseconds(300)).value
        #expect(waited >= .milliseconds(300))
    }

    @Test func aWaitWithoutSignalEndsAtItsTimeout() async throws {
        let wakeup = Wakeup()
        let waited = await waiter(wakeup, timeout: .milliseconds(200)).value
        #expect(waited >= .milliseconds(200))
        #expect(waited < .seconds(10))
        // A signal after a timed-out wait is kept for the next one.
        wakeup.signal()
        #expect(await waiter(wakeup, timeout: .seconds(30)).value < .seconds(10))
    }
}
