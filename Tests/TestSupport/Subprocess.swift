import Foundation

/// Runs a program to completion without blocking a thread of Swift's cooperative pool.
///
/// `Process.waitUntilExit()` blocks its thread; on a 2-core machine two such calls stall every
/// test in the process. This waits on the termination handler instead.
public enum Subprocess {
    private static let launching = NSLock()

    /// Starts `process`, one launch at a time in this test process: the suite crashed once inside
    /// Foundation's `Process.run()` (a bad pointer in its memcpy) while tests launched in parallel.
    public static func start(_ process: Process) throws {
        launching.lock()
        defer { launching.unlock() }
        try process.run()
    }

    public struct Result: Sendable {
        public var status: Int32
        public var output: String
    }

    /// Output goes to a file, not a pipe: a daemon started by the program would keep an
    /// inherited pipe open forever.
    /// `directory`: where it runs (by default, where the tests run).
    public static func run(_ executable: URL, _ arguments: [String], environment: [String: String]? = nil,
                           directory: URL? = nil) async throws -> Result {
        let outputURL = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("subprocess-\(UUID().uuidString)")
        FileManager.default.createFile(atPath: outputURL.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: outputURL) }
        let output = try FileHandle(forWritingTo: outputURL)
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        if let environment { process.environment = environment }
        if let directory { process.currentDirectoryURL = directory }
        process.standardOutput = output
        try start(process)
        let status = await terminationStatus(of: process)
        try output.close()
        return Result(status: status, output: String(decoding: try Data(contentsOf: outputURL), as: UTF8.self))
    }

    /// Starts a program and returns it running; `wait` it with `terminationStatus(of:)`.
    public static func launch(_ executable: URL, _ arguments: [String], environment: [String: String]? = nil) throws -> Process {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        if let environment { process.environment = environment }
        process.standardOutput = FileHandle.nullDevice
        try start(process)
        return process
    }

    /// Waits for a launched process by polling, without blocking a thread.
    ///
    /// Foundation notices a child's exit only once every holder of its monitoring socket has closed
    /// it, so when a daemon the child started inherited that descriptor, the child stays a zombie
    /// and `isRunning` stays true while the daemon lives (a test run hung for 13 minutes on a
    /// `servers.sh` that had exited). A child that is still a zombie a second later is reaped here.
    public static func terminationStatus(of process: Process) async -> Int32 {
        let pid = process.processIdentifier
        var polls = 0
        while process.isRunning {
            polls += 1
            if polls % 50 == 0, isZombie(pid) {
                var status: Int32 = 0
                if waitpid(pid, &status, WNOHANG) == pid {
                    // Foundation's convention: the exit code, or the number of the signal that ended it.
                    return status & 0x7f == 0 ? (status >> 8) & 0xff : status & 0x7f
                }
            }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return process.terminationStatus
    }

    private static func isZombie(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let end = stat.lastIndex(of: ")") else { return false }
        // "pid (command) state ...": the state follows the command's closing parenthesis.
        return stat[stat.index(after: end)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
    }
}
