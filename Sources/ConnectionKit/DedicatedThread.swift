import NIOCore
import NIOPosix

/// One operating-system thread, owned by one connection, usable as an actor's executor.
///
/// libpq and hiredis block the calling thread for the whole round trip. Swift's cooperative
/// pool has one thread per core (two on the machines we run on), so a single blocking call there
/// stalls every task in the process. A connection actor whose `unownedExecutor` is a
/// `DedicatedThread` runs all its C calls on its own thread instead, and the actor guarantees that
/// at most one of them runs at a time, which is exactly the confinement both libraries require.
///
/// The thread is a single-threaded NIO event loop; nothing else is ever scheduled on it.
public final class DedicatedThread: Sendable {
    private let group: MultiThreadedEventLoopGroup
    private let loop: any EventLoop

    public init() {
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        self.loop = group.next()
    }

    /// The executor to return from an actor's `unownedExecutor`.
    public var executor: UnownedSerialExecutor {
        loop.executor.asUnownedSerialExecutor()
    }

    /// Stops the thread. Must not be called from the thread itself.
    public func shutdown() async {
        try? await group.shutdownGracefully()
    }
}
