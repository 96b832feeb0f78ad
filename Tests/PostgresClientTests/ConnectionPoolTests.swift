import ConnectionKit
import Logging
import Synchronization
import Testing
import TestSupport

/// The pool is the unit here, so its connections are stand-ins that count how many are open at once.
/// (The pool's behaviour with real PostgreSQL connections is covered by PostgresClientTests.)
@Suite("Connection pool")
struct ConnectionPoolTests {
    /// Counts the connections that exist and are not yet closed, and the most there ever were.
    final class Census: Sendable {
        private let counts = Mutex((open: 0, peak: 0, made: 0))
        func opened() { counts.withLock { $0.open += 1; $0.made += 1; $0.peak = max($0.peak, $0.open) } }
        func closed() { counts.withLock { $0.open -= 1 } }
        var peak: Int { counts.withLock { $0.peak } }
        var made: Int { counts.withLock { $0.made } }
    }

    final class Counter: Sendable {
        private let value = Atomic<Int>(0)
        func add() -> Int { value.add(1, ordering: .relaxed).newValue }
        var count: Int { value.load(ordering: .relaxed) }
    }

    final class FakeConnection: PooledConnection {
        let census: Census
        private let state = Mutex((broken: false, closed: false))
        init(census: Census) { self.census = census }
        var isBroken: Bool { state.withLock { $0.broken } }
        func breakIt() { state.withLock { $0.broken = true } }
        func close() async {
            let first = state.withLock { state in
                defer { state.closed = true }
                return !state.closed
            }
            if first { census.closed() }
        }
    }

    @Test func neverMoreThanTheMaximumOpenUnderContention() async throws {
        let census = Census()
        let maximum = 3
        let factoryCalls = Counter()
        // A slow factory that sometimes fails: both free a slot while other tasks are waiting.
        let pool = ConnectionPool<FakeConnection>(name: "test", maxConnections: maximum, logger: TestEnvironment.logger) {
            // Counted from the moment the pool starts opening it: a connection being opened is open.
            census.opened()
            try await Task.sleep(for: .microseconds(Int.random(in: 0...800)))
            if factoryCalls.add() % 7 == 0 {
                census.closed()
                struct FactoryFailed: Error {}
                throw FactoryFailed()
            }
            return FakeConnection(census: census)
        }
        let leases = Counter()
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<48 {
                group.addTask {
                    for round in 0..<60 {
                        do {
                            try await pool.withConnection { connection in
                                _ = leases.add()
                                if round % 4 == 0 { await Task.yield() }
                                if Int.random(in: 0..<5) == 0 { connection.breakIt() }
                            }
                        } catch {}
                    }
                }
            }
        }
        await pool.close()
        #expect(leases.count > 0)
        #expect(census.made > maximum, "the test should have replaced broken connections")
        #expect(census.peak <= maximum, "at most \(maximum) connections may be open at once; saw \(census.peak)")
    }

    /// Whether `task` finishes before a generous deadline passes. A liveness bound, not a speed
    /// target. (Polls: a task group would wait for a child stuck on `task` and never return.)
    func finishesWithin<T: Sendable>(_ deadline: Duration, _ task: Task<T, any Error>) async -> Bool {
        let finished = Counter()
        Task { _ = await task.result; _ = finished.add() }
        let start = ContinuousClock.now
        while finished.count == 0, ContinuousClock.now - start < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        return finished.count > 0
    }

    @Test func aCancelledWaiterGetsCancellationErrorAndLeavesTheQueue() async throws {
        let census = Census()
        let pool = ConnectionPool<FakeConnection>(name: "test", maxConnections: 1, logger: TestEnvironment.logger) {
            census.opened()
            return FakeConnection(census: census)
        }
        let holding = AsyncStream<Void>.makeStream()
        let release = AsyncStream<Void>.makeStream()
        let holder = Task {
            try await pool.withConnection { _ in
                holding.continuation.yield()
                for await _ in release.stream { break }
            }
        }
        for await _ in holding.stream { break }
        let waiter = Task { try await pool.withConnection { _ in "leased" } }
        // Let the waiter queue up behind the holder, then cancel it.
        while await pool.waitingTasks == 0 { try await Task.sleep(for: .milliseconds(5)) }
        waiter.cancel()
        let returned = await finishesWithin(.seconds(10), waiter)
        release.continuation.yield()
        try await holder.value
        #expect(returned, "a cancelled waiter must return without waiting for a connection")
        let result = await waiter.result
        #expect(throws: CancellationError.self) { try result.get() }
        #expect(await pool.waitingTasks == 0)
        // The slot was not handed to the cancelled waiter: the next lease gets the held connection.
        #expect(try await pool.withConnection { _ in "again" } == "again")
        #expect(census.made == 1)
        await pool.close()
    }
}
