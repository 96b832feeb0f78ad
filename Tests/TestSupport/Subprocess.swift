import Foundation

/// Runs a program to completion without blocking a thread of Swift's cooperative pool.
///
/// A blocking wait would hold one of the cooperative pool's two threads; this polls `waitpid`.
/// Programs start through `ChildProcess` (posix_spawn), never Foundation's `Process`.
public enum Subprocess {
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
        let process = try ChildProcess.spawn(executable, arguments, environment: environment, stdout: outputURL.path, stderr: nil,
                                             directory: directory)
        let status = await terminationStatus(of: process)
        return Result(status: status, output: String(decoding: try Data(contentsOf: outputURL), as: UTF8.self))
    }

    /// Starts a program and returns it running; `wait` it with `terminationStatus(of:)`.
    public static func launch(_ executable: URL, _ arguments: [String], environment: [String: String]? = nil) throws -> ChildProcess {
        try ChildProcess.spawn(executable, arguments, environment: environment, stdout: nil, stderr: nil)
    }

    /// Waits for a launched process by polling `waitpid`, without blocking a thread.
    public static func terminationStatus(of process: ChildProcess) async -> Int32 {
        while process.isRunning { try? await Task.sleep(for: .milliseconds(20)) }
        return process.terminationStatus
    }
}
