import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What a listener delivers.
public enum PostgresListenerEvent: Sendable, Equatable {
    /// The listener is (again) subscribed. Notifications sent while it was not are lost, so a
    /// consumer should re-read whatever it watches. Always the first event.
    case subscribed
    case notification(PostgresNotification)
}

/// LISTENs on channels over its own connection and delivers notifications as an async sequence.
///
/// The connection sleeps in `poll(2)` on its socket, on its own thread, so waiting costs nothing.
/// When the connection breaks (server restart, network), the listener reconnects with backoff and
/// says so with `.subscribed`. Every `idleCheck` without traffic it runs a trivial query that must
/// answer within `idleCheckTimeout`, so a silently dead connection (a half-open TCP peer, or a
/// stuck proxy that acknowledges every byte and forwards none) is found and replaced.
public final class PostgresListener: Sendable {
    private let configuration: PostgresConfiguration
    private let channels: [String]
    private let logger: Logger
    private let idleCheckMilliseconds: Int32
    private let idleCheckTimeoutMilliseconds: Int32
    /// A pipe whose write end `stop()` writes to, so the poll on the socket returns at once.
    private let wakeRead: Int32
    private let wakeWrite: Int32
    private let stopped = Atomic<Bool>(false)
    /// How many times the wait on the socket has returned; tests use it to prove there is no busy polling.
    let wakeups = Atomic<Int>(0)

    public init(
        configuration: PostgresConfiguration,
        channels: [String],
        idleCheck: Duration = .seconds(15),
        idleCheckTimeout: Duration = .seconds(5),
        logger: Logger
    ) {
        self.configuration = configuration
        self.channels = channels
        self.logger = logger
        self.idleCheckMilliseconds = Self.milliseconds(idleCheck)
        self.idleCheckTimeoutMilliseconds = Self.milliseconds(idleCheckTimeout)
        var fds: [Int32] = [-1, -1]
        precondition(pipe(&fds) == 0, "cannot create a pipe")
        for fd in fds {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        self.wakeRead = fds[0]
        self.wakeWrite = fds[1]
    }

    private static func milliseconds(_ duration: Duration) -> Int32 {
        Int32(duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000)
    }

    deinit {
        close(wakeRead)
        close(wakeWrite)
    }

    /// Stops `events()`; the sequence finishes shortly after.
    public func stop() {
        stopped.store(true, ordering: .relaxed)
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
    }

    /// The notifications, until `stop()` is called or the consuming task is cancelled.
    public func events() -> AsyncStream<PostgresListenerEvent> {
        AsyncStream { continuation in
            let task = Task { await self.run(continuation) }
            continuation.onTermination = { _ in
                self.stop()
                task.cancel()
            }
        }
    }

    private func run(_ continuation: AsyncStream<PostgresListenerEvent>.Continuation) async {
        var backoff = Duration.milliseconds(100)
        while !stopped.load(ordering: .relaxed) && !Task.isCancelled {
            let connection: PostgresConnection
            do {
                connection = try await PostgresConnection.connect(configuration, logger: logger)
                for channel in channels { try await connection.listen(channel) }
            } catch {
                logger.warning("listener cannot connect; retrying", metadata: ["error": "\(error)", "retry_in": "\(backoff)"])
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(5))
                continue
            }
            backoff = .milliseconds(100)
            continuation.yield(.subscribed)
            do {
                while !stopped.load(ordering: .relaxed) && !Task.isCancelled {
                    let received = try await connection.waitForNotifications(
                        wakeFD: wakeRead, timeoutMilliseconds: idleCheckMilliseconds)
                    wakeups.add(1, ordering: .relaxed)
                    if received.isEmpty {
                        drainWakeFD()
                        if !stopped.load(ordering: .relaxed) { try await connection.ping(timeoutMilliseconds: idleCheckTimeoutMilliseconds) }
                    }
                    for notification in received { continuation.yield(.notification(notification)) }
                }
            } catch {
                logger.warning("listener connection lost; reconnecting", metadata: ["error": "\(error)"])
            }
            await connection.close()
        }
        continuation.finish()
    }

    private func drainWakeFD() {
        var buffer = [UInt8](repeating: 0, count: 64)
        while read(wakeRead, &buffer, buffer.count) > 0 {}
    }
}
