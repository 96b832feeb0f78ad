import NIOConcurrencyHelpers
import CHiredis
import ConnectionKit
import Logging
import Synchronization

/// One hiredis connection, confined to its own thread.
///
/// A `redisContext` is not thread-safe at all, and every call blocks for a round trip. The actor's
/// executor is a `DedicatedThread`, so hiredis only ever runs there, one call at a time, and never
/// on Swift's cooperative pool. Connect and command timeouts bound every call; a timeout or I/O
/// error marks the connection broken, and the pool replaces it.
public actor RedisConnection: PooledConnection {
    private let thread: DedicatedThread
    private var context: UnsafeMutablePointer<redisContext>?
    private let broken = Atomic<Bool>(false)
    private let logger: Logger

    public nonisolated var unownedExecutor: UnownedSerialExecutor { thread.executor }
    public nonisolated var isBroken: Bool { broken.load(ordering: .relaxed) }

    private init(thread: DedicatedThread, logger: Logger) {
        self.thread = thread
        self.logger = logger
    }

    public static func connect(_ configuration: RedisConfiguration, logger: Logger) async throws -> RedisConnection {
        let connection = RedisConnection(thread: DedicatedThread(), logger: logger)
        do {
            try await connection.open(configuration)
        } catch {
            await connection.close()
            throw error
        }
        return connection
    }

    private func open(_ configuration: RedisConfiguration) throws {
        let timeout = wa_timeval_ms(configuration.connectTimeoutMilliseconds)
        let context: UnsafeMutablePointer<redisContext>? = switch configuration.endpoint {
        case .tcp(let host, let port): redisConnectWithTimeout(host, Int32(port), timeout)
        case .unix(let path): redisConnectUnixWithTimeout(path, timeout)
        }
        guard let context else {
            broken.store(true, ordering: .relaxed)
            throw RedisError(kind: .connection, message: "cannot allocate redis context")
        }
        self.context = context
        if wa_redis_err(context) != 0 {
            throw connectionError(context)
        }
        redisSetTimeout(context, wa_timeval_ms(configuration.commandTimeoutMilliseconds))
        if let password = configuration.password {
            let auth = configuration.username.map { RedisCommand("AUTH", [$0, password]) } ?? RedisCommand("AUTH", [password])
            try send(auth)
        }
        if configuration.database != 0 {
            try send(RedisCommand("SELECT", [configuration.database]))
        }
    }

    public nonisolated func close() async {
        await finish()
        await thread.shutdown()
    }

    private func finish() {
        if let context { redisFree(context) }
        context = nil
        broken.store(true, ordering: .relaxed)
    }

    // MARK: Commands

    /// Sends one command and returns its reply; an error reply is thrown as `.reply`.
    @discardableResult
    public func send(_ command: RedisCommand) throws -> RedisValue {
        let context = try liveContext()
        let raw = withArgv(command) { argc, argv, lengths in
            redisCommandArgv(context, argc, argv, lengths)
        }
        guard let raw else { throw connectionError(context) }
        let reply = raw.assumingMemoryBound(to: redisReply.self)
        defer { freeReplyObject(raw) }
        let value = Self.copy(reply)
        if case .error(let message) = value { throw RedisError(kind: .reply, message: message) }
        return value
    }

    /// Convenience for `send(RedisCommand(name, arguments))`.
    @discardableResult
    public func send(_ name: String, _ arguments: any RedisArgument...) throws -> RedisValue {
        try send(RedisCommand(name, arguments))
    }

    /// Writes all commands, then reads all replies: one round trip. Error replies are returned
    /// in place as `.error`, since each command of a pipeline succeeds or fails on its own.
    public func pipeline(_ commands: [RedisCommand]) throws -> [RedisValue] {
        let context = try liveContext()
        for command in commands {
            let status = withArgv(command) { argc, argv, lengths in
                redisAppendCommandArgv(context, argc, argv, lengths)
            }
            guard status == REDIS_OK else { throw connectionError(context) }
        }
        var replies: [RedisValue] = []
        replies.reserveCapacity(commands.count)
        for _ in commands {
            var raw: UnsafeMutableRawPointer?
            guard redisGetReply(context, &raw) == REDIS_OK, let raw else { throw connectionError(context) }
            replies.append(Self.copy(raw.assumingMemoryBound(to: redisReply.self)))
            freeReplyObject(raw)
        }
        return replies
    }

    /// Runs a Lua script by EVALSHA, loading it first when Redis does not know it (a fresh
    /// server, or after SCRIPT FLUSH).
    @discardableResult
    public func evaluate(_ script: RedisScript, keys: [any RedisArgument], arguments: [any RedisArgument]) throws -> RedisValue {
        let sha = try script.sha ?? load(script)
        do {
            return try send(RedisCommand("EVALSHA", [sha, keys.count] + keys + arguments))
        } catch let error as RedisError where error.kind == .reply && error.message.hasPrefix("NOSCRIPT") {
            let sha = try load(script)
            return try send(RedisCommand("EVALSHA", [sha, keys.count] + keys + arguments))
        }
    }

    /// Loads a script (SCRIPT LOAD) and remembers its SHA, for callers that pipeline EVALSHA.
    @discardableResult
    public func load(_ script: RedisScript) throws -> String {
        guard let sha = try send(RedisCommand("SCRIPT", ["LOAD", script.source])).string else {
            throw RedisError(kind: .unexpectedReply, message: "SCRIPT LOAD returned no sha")
        }
        script.sha = sha
        return sha
    }

    // MARK: hiredis plumbing

    private func liveContext() throws -> UnsafeMutablePointer<redisContext> {
        guard let context, !isBroken else { throw RedisError(kind: .connection, message: "connection is closed") }
        return context
    }

    private func connectionError(_ context: UnsafeMutablePointer<redisContext>) -> RedisError {
        broken.store(true, ordering: .relaxed)
        let message = String(cString: wa_redis_errstr(context))
        logger.warning("redis connection broken", metadata: ["error": "\(message)"])
        return RedisError(kind: .connection, message: message.isEmpty ? "connection lost" : message)
    }

    private func withArgv<R>(
        _ command: RedisCommand,
        _ body: (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafePointer<Int>) -> R
    ) -> R {
        var buffer: [UInt8] = []
        buffer.reserveCapacity(command.arguments.reduce(1) { $0 + $1.count })
        var offsets: [Int] = []
        for argument in command.arguments {
            offsets.append(buffer.count)
            buffer.append(contentsOf: argument)
        }
        buffer.append(0)
        let lengths = command.arguments.map(\.count)
        return buffer.withUnsafeBytes { raw in
            let base = raw.baseAddress!.assumingMemoryBound(to: CChar.self)
            var argv: [UnsafePointer<CChar>?] = offsets.map { base + $0 }
            return argv.withUnsafeMutableBufferPointer { argvPointer in
                lengths.withUnsafeBufferPointer { lengthPointer in
                    body(Int32(lengths.count), argvPointer.baseAddress!, lengthPointer.baseAddress!)
                }
            }
        }
    }

    private static func copy(_ reply: UnsafePointer<redisReply>) -> RedisValue {
        func bytes() -> [UInt8] {
            let length = wa_reply_len(reply)
            guard length > 0, let str = wa_reply_str(reply) else { return [] }
            return str.withMemoryRebound(to: UInt8.self, capacity: length) { Array(UnsafeBufferPointer(start: $0, count: length)) }
        }
        switch wa_reply_type(reply) {
        case REDIS_REPLY_STRING: return .bulk(bytes())
        case REDIS_REPLY_STATUS: return .status(String(decoding: bytes(), as: UTF8.self))
        case REDIS_REPLY_ERROR: return .error(String(decoding: bytes(), as: UTF8.self))
        case REDIS_REPLY_INTEGER: return .integer(wa_reply_integer(reply))
        case REDIS_REPLY_ARRAY:
            return .array((0..<wa_reply_elements(reply)).map { copy(wa_reply_element(reply, $0)) })
        default: return .null
        }
    }
}

/// A Lua script, remembered by its SHA once Redis has loaded it.
public final class RedisScript: Sendable {
    public let source: String
    private let cachedSHA = NIOLockedValueBox<String?>(nil)

    public init(_ source: String) { self.source = source }

    /// The SHA once Redis has loaded the script through this process.
    public internal(set) var sha: String? {
        get { cachedSHA.withLockedValue { $0 } }
        set { cachedSHA.withLockedValue { $0 = newValue } }
    }
}
