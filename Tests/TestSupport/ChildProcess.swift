import Foundation

/// A program the tests started with `posix_spawn`, not Foundation's `Process`.
///
/// Foundation's `Process.run()` on Linux scans `/proc/self/fd` and copies 256 bytes of each
/// entry's name out of `readdir`'s buffer, reading past short records; when the last one ends near
/// an unmapped page the whole test process dies with SIGSEGV (swift-corelibs-foundation#5472, not
/// in a release yet). This suite crashed so twice in one day, once in CI's rehearsal, both times
/// inside `Process.run()`. Same surface as `Process` where the tests use it.
public final class ChildProcess: @unchecked Sendable {
    public let processIdentifier: Int32
    public let arguments: [String]?
    private let lock = NSLock()
    private var status: Int32?

    init(pid: Int32, arguments: [String]) {
        self.processIdentifier = pid
        self.arguments = arguments
    }

    /// True until the child has exited (and is reaped here).
    public var isRunning: Bool { reap() == nil }

    /// The exit code, or the number of the signal that ended it (Foundation's convention); -1 while running.
    public var terminationStatus: Int32 { reap() ?? -1 }

    public func terminate() { kill(processIdentifier, SIGTERM) }

    private func reap() -> Int32? {
        lock.lock()
        defer { lock.unlock() }
        if let status { return status }
        var raw: Int32 = 0
        let result = waitpid(processIdentifier, &raw, WNOHANG)
        if result == processIdentifier {
            status = raw & 0x7f == 0 ? (raw >> 8) & 0xff : raw & 0x7f
        } else if result < 0 && errno == ECHILD {
            status = -1
        }
        return status
    }

    /// Starts `executable`. `stdout`, `stderr`: files to append to (nil: /dev/null for stdout, the
    /// tests' own stderr for stderr). Every other descriptor of the test process stays behind.
    static func spawn(_ executable: URL, _ arguments: [String], environment: [String: String]?, stdout: String?, stderr: String?,
                      directory: URL? = nil) throws -> ChildProcess {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdout ?? "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0o644)
        if let stderr { posix_spawn_file_actions_addopen(&actions, 2, stderr, O_WRONLY | O_CREAT | O_APPEND, 0o644) }
        try Self.glibc(closeFrom: 3, &actions)
        if let directory { try Self.glibc(chdir: directory.path, &actions) }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t(), all = sigset_t()
        sigemptyset(&none)
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let environment = environment ?? ProcessInfo.processInfo.environment
        let argv = ([executable.path] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (argv + envp).forEach { free($0) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable.path, &actions, &attributes, argv, envp)
        guard result == 0 else { throw POSIXError(POSIXErrorCode(rawValue: result) ?? .EINVAL) }
        return ChildProcess(pid: pid, arguments: arguments)
    }

    private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    private typealias AddChdir = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, UnsafePointer<CChar>) -> Int32

    /// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34), which Swift's Glibc module does not declare.
    private static func glibc(closeFrom fd: Int32, _ actions: inout posix_spawn_file_actions_t) throws {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else {
            throw POSIXError(.ENOSYS)
        }
        let result = unsafeBitCast(symbol, to: AddCloseFrom.self)(&actions, fd)
        guard result == 0 else { throw POSIXError(POSIXErrorCode(rawValue: result) ?? .EINVAL) }
    }

    /// glibc's `posix_spawn_file_actions_addchdir_np` (2.29).
    private static func glibc(chdir path: String, _ actions: inout posix_spawn_file_actions_t) throws {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addchdir_np") else {
            throw POSIXError(.ENOSYS)
        }
        let result = path.withCString { unsafeBitCast(symbol, to: AddChdir.self)(&actions, $0) }
        guard result == 0 else { throw POSIXError(POSIXErrorCode(rawValue: result) ?? .EINVAL) }
    }
}
