import AsyncHTTPClient
import Foundation
import NIOCore
import Synchronization
import Testing

/// An event-stream client that behaves as `EventSource` does: when its stream ends (the server
/// cut it for falling behind, or the connection dropped) it reconnects with `Last-Event-ID`, here
/// to the next API process in turn, so nothing it was owed is lost and nothing repeats.
struct ResumingStream: Sendable {
    /// The API processes' ports: the first connection goes to `ports[0]`, each reconnection to the next.
    let ports: [Int]
    let path: String
    let headers: [(String, String)]

    /// What one client received over all its connections.
    struct Received: Sendable {
        var messages: [SSEMessage] = []
        /// How many connections it took (1 when the stream never ended early).
        var connections = 0
        var events: [SSEMessage] { messages.filter { $0.event == "message.status" } }
    }

    /// Reads until `done` holds for the latest messages received (up to 50, so that a long stream
    /// costs no quadratic time). With `dropAfter`, the client itself hangs up once it has that many
    /// events, waits `away`, and resumes on the next process: a client that goes away mid-run.
    func read(until deadline: ContinuousClock.Instant, dropAfter: Int? = nil, away: Duration = .milliseconds(500),
              done: @Sendable @escaping (ArraySlice<SSEMessage>) -> Bool) async throws -> Received {
        var received = Received()
        var dropped = false
        while true {
            let port = ports[received.connections % ports.count]
            received.connections += 1
            var requestHeaders = headers
            if let last = received.messages.last(where: { $0.lastEventID != nil })?.lastEventID {
                requestHeaders.append(("Last-Event-ID", last))
            }
            let tail = received.messages.suffix(50)
            let drop = dropped ? nil : dropAfter
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else { throw TimedOut.because("the stream did not end within its deadline: \(received.events.count) events") }
            let (status, messages) = try await readStream(port: port, path: path, headers: requestHeaders, timeout: remaining) { messages in
                if let drop, messages.lazy.filter({ $0.event == "message.status" }).count >= drop { return true }
                return done(messages.count >= 50 ? messages.suffix(50) : (tail + messages).suffix(50))
            }
            try #require(status == 200, "the stream answered \(status) on port \(port)")
            received.messages += messages
            if done(received.messages.suffix(50)) { return received }
            // The first connection of a client that drops ends with its hang-up (or earlier, cut by the server).
            if dropAfter != nil, !dropped {
                dropped = true
                try await Task.sleep(for: away)
            }
        }
    }
}

/// A value set once, read by closures that run before it is set.
final class Box<Value: Sendable>: Sendable {
    private let value: Mutex<Value>
    init(_ value: Value) { self.value = Mutex(value) }
    var current: Value { value.withLock { $0 } }
    func set(_ new: Value) { value.withLock { $0 = new } }
}

extension HTTPClient {
    /// A client that opens up to 64 connections per host (the shared one opens 8), so that
    /// concurrent requests are concurrent at the server too. Never shut down: it lives as long as the tests.
    static let wide = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(
        connectionPool: .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 64)))
}
