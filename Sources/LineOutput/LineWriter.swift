import Foundation

/// Writes bytes to a file descriptor from a dedicated thread, so that callers never block.
///
/// A write to standard error blocks for as long as the reader of the pipe does not read; a write
/// to a file waits for the disk. Swift's cooperative pool has one thread per core, so such a write
/// there stalls every task in the process. `write` here only appends to an in-memory buffer under
/// a lock; one thread of the writer's own takes whole buffers and writes them out.
///
/// - `.bounded`: when the buffer holds `bytes` already, a write is dropped and counted (log lines:
///   losing some beats stalling the worker); the count is reported through `dropNote` once the
///   output moves again.
/// - `.unbounded`: nothing is dropped (the simulator's delivery log, which tests count).
///
/// `flush()` waits, without blocking a thread, until everything written before it is out;
/// `flush(timeout:)` blocks, for exit paths that have no async context left.
public final class LineWriter: @unchecked Sendable {
    public enum Capacity: Sendable {
        case bounded(bytes: Int)
        case unbounded
    }

    private let descriptor: Int32
    private let closesDescriptor: Bool
    private let limit: Int?
    private let dropNote: @Sendable (Int) -> String
    /// Guards every variable below.
    private let condition = NSCondition()
    private var buffer: [UInt8] = []
    private var droppedSinceNote = 0
    private var droppedTotal = 0
    /// Bytes accepted and bytes written (or given up on) since the start.
    private var accepted: UInt64 = 0
    private var written: UInt64 = 0
    private var flushWaiters: [(upTo: UInt64, continuation: CheckedContinuation<Void, Never>)] = []
    private var stopping = false

    /// - Parameters:
    ///   - closesDescriptor: close `descriptor` when the writer stops.
    ///   - dropNote: the line that reports lines dropped (bounded writers only).
    public init(fileDescriptor descriptor: Int32, capacity: Capacity, closesDescriptor: Bool = false, name: String,
                dropNote: @escaping @Sendable (Int) -> String = { "\($0) lines dropped: the output was not read fast enough\n" }) {
        self.descriptor = descriptor
        self.closesDescriptor = closesDescriptor
        if case .bounded(let bytes) = capacity { limit = bytes } else { limit = nil }
        self.dropNote = dropNote
        let thread = Thread { [self] in run() }
        thread.name = name
        thread.start()
    }

    /// Lines dropped so far because the buffer was full.
    public var droppedLines: Int {
        condition.withLock { droppedTotal }
    }

    /// Queues `line` (which should end in a newline); never blocks on the output.
    public func write(_ line: String) {
        var line = line
        line.withUTF8 { write(bytes: $0) }
    }

    /// Queues `bytes`; never blocks on the output.
    public func write(bytes: UnsafeBufferPointer<UInt8>) {
        condition.withLock {
            if stopping { return }
            // The writer thread sleeps only while there is nothing to write and nothing to report.
            if buffer.isEmpty && droppedSinceNote == 0 { condition.signal() }
            if let limit, buffer.count + bytes.count > limit {
                droppedSinceNote += 1
                droppedTotal += 1
                return
            }
            buffer.append(contentsOf: bytes)
            accepted += UInt64(bytes.count)
        }
    }

    /// Returns once everything queued before the call has been written.
    public func flush() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = condition.withLock {
                if written >= accepted { return true }
                flushWaiters.append((accepted, continuation))
                return false
            }
            if done { continuation.resume() }
        }
    }

    /// Blocks until everything queued before the call has been written, or `timeout` passes (an
    /// output nobody reads must not keep a process from exiting). Returns whether all was written.
    @discardableResult
    public func flush(timeout: Duration) -> Bool {
        let deadline = Date().addingTimeInterval(Double(timeout.components.seconds) + Double(timeout.components.attoseconds) * 1e-18)
        return condition.withLock {
            let target = accepted
            while written < target {
                if !condition.wait(until: deadline) { return written >= target }
            }
            return true
        }
    }

    /// Writes what is queued, then ends the thread (and closes the descriptor if it owns it).
    /// Later writes are ignored.
    public func stop() {
        condition.withLock {
            stopping = true
            condition.signal()
        }
    }

    private func run() {
        var batch: [UInt8] = []
        condition.lock()
        while true {
            while buffer.isEmpty && droppedSinceNote == 0 && !stopping { condition.wait() }
            if buffer.isEmpty && droppedSinceNote == 0 { break }
            swap(&batch, &buffer)
            let dropped = droppedSinceNote
            droppedSinceNote = 0
            condition.unlock()
            writeAll(batch)
            if dropped > 0 { writeAll(Array(dropNote(dropped).utf8)) }
            condition.lock()
            written += UInt64(batch.count)
            batch.removeAll(keepingCapacity: true)
            let done = flushWaiters.filter { $0.upTo <= written }
            flushWaiters.removeAll { $0.upTo <= written }
            for waiter in done { waiter.continuation.resume() }
            condition.broadcast()
        }
        // Nothing more is written once stopping: let any flush waiter go.
        let waiters = flushWaiters
        flushWaiters.removeAll()
        written = accepted
        condition.broadcast()
        condition.unlock()
        for waiter in waiters { waiter.continuation.resume() }
        if closesDescriptor { close(descriptor) }
    }

    /// Writes all of `bytes`, retrying short writes and interruptions; gives up on other errors
    /// (a closed or failing output loses its lines rather than stalling the writer forever).
    private func writeAll(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let count = Foundation.write(descriptor, raw.baseAddress! + offset, raw.count - offset)
                if count > 0 {
                    offset += count
                } else if count < 0 && errno == EINTR {
                    continue
                } else if count < 0 && errno == EAGAIN {
                    var poller = pollfd(fd: descriptor, events: Int16(POLLOUT), revents: 0)
                    _ = poll(&poller, 1, 1000)
                } else {
                    return
                }
            }
        }
    }
}

/// For `StreamLogHandler(label:stream:)`: swift-log's own text format, through the writer.
extension LineWriter: TextOutputStream {}
