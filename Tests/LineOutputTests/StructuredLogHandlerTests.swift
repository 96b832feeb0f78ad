import Foundation
import LineOutput
import Logging
import Synchronization
import Testing

/// A pipe whose read end the test controls: left unread, or drained into memory.
final class TestPipe: @unchecked Sendable {
    let readFD: Int32
    let writeFD: Int32
    private let drained = Mutex<[UInt8]>([])
    private var drainer: Thread?
    private let drainerDone = DispatchSemaphore(value: 0)

    init() throws {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw POSIXError(.EMFILE) }
        readFD = fds[0]
        writeFD = fds[1]
    }

    /// Writes until the pipe is full, as a log reader that stopped reading leaves it.
    func fill() {
        let flags = fcntl(writeFD, F_GETFL)
        _ = fcntl(writeFD, F_SETFL, flags | O_NONBLOCK)
        let chunk = [UInt8](repeating: UInt8(ascii: "x"), count: 4096)
        while chunk.withUnsafeBytes({ write(writeFD, $0.baseAddress, $0.count) }) > 0 {}
        _ = fcntl(writeFD, F_SETFL, flags)
    }

    /// Starts reading everything into memory, until the write end is closed.
    func startDraining() {
        let thread = Thread { [self] in
            var buffer = [UInt8](repeating: 0, count: 65_536)
            while true {
                let count = buffer.withUnsafeMutableBytes { read(readFD, $0.baseAddress, $0.count) }
                if count <= 0 { break }
                drained.withLock { $0 += buffer[0..<count] }
            }
            drainerDone.signal()
        }
        drainer = thread
        thread.start()
    }

    /// What the drainer has read so far.
    var text: String { String(decoding: drained.withLock { $0 }, as: UTF8.self) }

    /// Closes the write end and waits for the drainer to see the end; returns what it read.
    func finish() -> String {
        close(writeFD)
        if drainer != nil { drainerDone.wait() }
        close(readFD)
        return String(decoding: drained.withLock { $0 }, as: UTF8.self)
    }
}

final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .sequentiallyConsistent) }
    var isSet: Bool { value.load(ordering: .sequentiallyConsistent) }
}

@Suite("Log lines")
struct StructuredLogHandlerTests {
    /// Liveness bound (seconds, not a speed target): a non-blocking log call returns in microseconds.
    static let deadline: Duration = .seconds(10)

    /// A writer that holds at most 64 KiB, as the process's standard error writer holds 4 MiB.
    func makeWriter(_ pipe: TestPipe) -> LineWriter {
        LineWriter(fileDescriptor: pipe.writeFD, capacity: .bounded(bytes: 64 << 10), name: "test-log")
    }

    @Test func loggingToAPipeNobodyReadsDoesNotBlockTheCaller() async throws {
        let pipe = try TestPipe()
        pipe.fill()
        let writer = makeWriter(pipe)
        let logger = Logger(label: "test") { StructuredLogHandler(label: $0, format: .json, output: writer) }
        let done = Flag()
        // On a thread of its own, so that a blocked call cannot stall the test's cooperative threads.
        Thread {
            for index in 0..<2_000 { logger.info("line \(index)", metadata: ["job": "\(index)"]) }
            done.set()
        }.start()
        let start = ContinuousClock.now
        while !done.isSet, ContinuousClock.now - start < Self.deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        let returned = done.isSet
        // Let whatever is blocked go, so the test ends either way.
        pipe.startDraining()
        while !done.isSet { try await Task.sleep(for: .milliseconds(10)) }
        await writer.flush()
        let dropped = writer.droppedLines
        logger.info("after the reader came back")
        await writer.flush()
        writer.stop()
        let output = pipe.finish()
        #expect(returned, "2,000 log calls did not return within \(Self.deadline) while the output pipe was full")
        // 2,000 lines of ~100 bytes do not fit in 64 KiB: some were dropped, counted, and reported.
        #expect(dropped > 0)
        #expect(output.contains("\(dropped) lines dropped"))
        #expect(output.contains("after the reader came back"))
    }

    /// A line longer than the whole buffer is dropped even when the buffer is empty, and reported
    /// without waiting for another line to wake the writer.
    @Test func aLineLargerThanTheBufferIsDroppedAndReported() async throws {
        let pipe = try TestPipe()
        pipe.startDraining()
        let writer = makeWriter(pipe)
        // Once this is flushed, the writer thread is asleep: it holds its lock until it waits.
        writer.write("first\n")
        await writer.flush()
        writer.write(String(repeating: "x", count: 128 << 10) + "\n")
        let start = ContinuousClock.now
        while !pipe.text.contains("1 lines dropped"), ContinuousClock.now - start < Self.deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        writer.write("short\n")
        await writer.flush()
        writer.stop()
        let output = pipe.finish()
        #expect(writer.droppedLines == 1)
        #expect(output.hasPrefix("first\n1 lines dropped"), "the drop was not reported on its own: \(output.prefix(100))")
        #expect(output.hasSuffix("short\n"))
    }

    @Test func everyLineArrivesInOrderWhenTheReaderKeepsUp() async throws {
        let pipe = try TestPipe()
        pipe.startDraining()
        let writer = makeWriter(pipe)
        let logger = Logger(label: "test") { StructuredLogHandler(label: $0, format: .logfmt, output: writer) }
        for index in 0..<500 { logger.info("line \(index)", metadata: ["job": "\(index)"]) }
        await writer.flush()
        writer.stop()
        #expect(writer.droppedLines == 0)
        let lines = pipe.finish().split(separator: "\n")
        #expect(lines.count == 500)
        #expect(lines.enumerated().allSatisfy { $0.element.contains(#"message="line \#($0.offset)" job=\#($0.offset)"#) })
    }
}
