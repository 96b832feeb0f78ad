import Foundation
@testable import PostgresClient
import Synchronization
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// A LISTEN connection whose peer stops answering without closing: what a stuck proxy or
/// middlebox does (scripts/chaos, fault `listen-cut`). TCP keepalives and the user timeout do not
/// see it, because something still acknowledges every byte; the listener's idle check must.
@Suite("PostgreSQL listener on a peer that stops answering")
struct ListenerStallTests {
    /// The listener's backend is stopped (SIGSTOP): the kernel keeps acknowledging, the server never
    /// answers. The listener must give that connection up and subscribe again on a new one. Before
    /// the idle check had a timeout, its `SELECT 1` waited forever and the listener was deaf for
    /// the rest of the process's life.
    @Test func aListenerWhosePeerStopsAnsweringSubscribesAgain() async throws {
        let server = try await PrivateServer.start(.postgres)
        let name = "stalled-listener-\(UUID().uuidString.prefix(8))"
        let listener = PostgresListener(configuration: PostgresConfiguration(server.url, applicationName: name), channels: ["stall_probe"],
                                        idleCheck: .milliseconds(500), logger: TestEnvironment.logger)
        let subscriptions = Atomic<Int>(0)
        let consumer = Task {
            for await event in listener.events() where event == .subscribed { subscriptions.add(1, ordering: .relaxed) }
        }
        let probe = try await PostgresConnection.connect(PostgresConfiguration(server.url), logger: TestEnvironment.logger)
        try await waitUntil(.seconds(60)) { subscriptions.load(ordering: .relaxed) >= 1 }
        let rows = try await probe.query("SELECT pid FROM pg_stat_activity WHERE application_name = \(name)")
        try #require(rows.count == 1, "the listener's backend was not found")
        let pid = try rows[0].decode(Int32.self, at: 0)
        #expect(kill(pid, SIGSTOP) == 0, "cannot stop backend \(pid): errno \(errno)")

        // A liveness bound for a loaded machine; the idle check finds it in about a second plus its timeout.
        let resubscribed = (try? await waitUntil(.seconds(60)) { subscriptions.load(ordering: .relaxed) >= 2 }) != nil
        #expect(resubscribed, "the listener kept a connection whose peer stopped answering")

        _ = kill(pid, SIGCONT)
        listener.stop()
        consumer.cancel()
        _ = try? await probe.query("SELECT pg_terminate_backend(\(pid))")
        await probe.close()
        await server.destroy()
    }

    private struct NotYet: Error {}

    private func waitUntil(_ bound: Duration, _ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + bound
        while !condition() {
            guard ContinuousClock.now < deadline else { throw NotYet() }
            try await Task.sleep(for: .milliseconds(50))
        }
    }
}
