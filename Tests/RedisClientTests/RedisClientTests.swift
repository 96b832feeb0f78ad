import Foundation
import RedisClient
import Testing
import TestSupport

@Suite("Redis client against a real server")
struct RedisClientTests {
    func connect() async throws -> RedisConnection {
        try await RedisConnection.connect(try RedisConfiguration(url: try TestEnvironment.redisURL()), logger: TestEnvironment.logger)
    }

    func key(_ name: String) -> String { "test:\(name):\(UUID().uuidString)" }

    @Test func everyByteValueRoundTrips() async throws {
        let redis = try await connect()
        defer { Task { await redis.close() } }
        let all = (0...255).map(UInt8.init)
        let whole = key("bytes")
        try await redis.send("SET", whole, all)
        #expect(try await redis.send("GET", whole) == .bulk(all))
        let commands = all.map { RedisCommand("SET", [key("byte-\($0)"), [$0, 0, $0]]) }
        _ = try await redis.pipeline(commands)
        let replies = try await redis.pipeline(commands.map { RedisCommand("GET", [$0.arguments[1]]) })
        #expect(replies == all.map { .bulk([$0, 0, $0]) })
    }

    @Test func nilAndEmptyStringAreToldApart() async throws {
        let redis = try await connect()
        defer { Task { await redis.close() } }
        let empty = key("empty")
        try await redis.send("SET", empty, "")
        #expect(try await redis.send("GET", empty) == .bulk([]))
        #expect(try await redis.send("GET", key("missing")) == .null)
        #expect(try await redis.send("GET", key("missing")).isNull)
    }

    @Test func replyKindsDecode() async throws {
        let redis = try await connect()
        defer { Task { await redis.close() } }
        let list = key("list")
        #expect(try await redis.send("PING") == .status("PONG"))
        #expect(try await redis.send("RPUSH", list, "a", "b") == .integer(2))
        #expect(try await redis.send("LRANGE", list, 0, -1) == .array([.bulk(Array("a".utf8)), .bulk(Array("b".utf8))]))
        await #expect(throws: RedisError.self) { try await redis.send("INCR", list) }
        let replies = try await redis.pipeline([RedisCommand("INCR", [list]), RedisCommand("PING")])
        guard case .error(let message) = replies[0] else { Issue.record("expected an error reply"); return }
        #expect(message.hasPrefix("WRONGTYPE"))
        #expect(replies[1] == .status("PONG"))
    }

    @Test func thousandCommandsPipelinedInOneFlush() async throws {
        let redis = try await connect()
        defer { Task { await redis.close() } }
        let counter = key("counter")
        let replies = try await redis.pipeline(Array(repeating: RedisCommand("INCR", [counter]), count: 1_000))
        #expect(replies == (1...1_000).map { .integer(Int64($0)) })
    }

    @Test func evalshaWorksAfterScriptFlush() async throws {
        let redis = try await connect()
        defer { Task { await redis.close() } }
        let script = RedisScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        let counter = key("script")
        #expect(try await redis.evaluate(script, keys: [counter], arguments: [5]) == .integer(5))
        try await redis.send("SCRIPT", "FLUSH")
        #expect(try await redis.evaluate(script, keys: [counter], arguments: [2]) == .integer(7))
    }

    @Test func restartIsReportedAndTheNextCallRecovers() async throws {
        let server = try await PrivateServer.start(.redis)
        let redis = RedisDatabase(configuration: try RedisConfiguration(url: server.url), maxConnections: 2, logger: TestEnvironment.logger)
        #expect(try await redis.send("SET", "k", "v") == .status("OK"))
        try await server.restart()
        do {
            try await redis.send("GET", "k")
            Issue.record("expected the first call after a restart to fail")
        } catch let error as RedisError {
            #expect(error.kind == .connection)
        }
        // Redis ran without persistence, so the value is gone, and the connection works again.
        #expect(try await redis.send("GET", "k") == .null)
        await redis.close()
        await server.destroy()
    }

    @Test func commandTimeoutBreaksTheConnectionInsteadOfHanging() async throws {
        var configuration = try RedisConfiguration(url: try TestEnvironment.redisURL())
        configuration.commandTimeoutMilliseconds = 200
        let redis = try await RedisConnection.connect(configuration, logger: TestEnvironment.logger)
        defer { Task { await redis.close() } }
        await #expect(throws: RedisError.self) { try await redis.send("BLPOP", key("never"), 2) }
        #expect(redis.isBroken)
    }

    @Test func urlsParse() throws {
        let full = try RedisConfiguration(url: "redis://user:p%40ss@cache.internal:6380/3")
        #expect(full.endpoint == .tcp(host: "cache.internal", port: 6380))
        #expect(full.username == "user")
        #expect(full.password == "p@ss")
        #expect(full.database == 3)
        #expect(!full.description.contains("p@ss"))
        let passwordOnly = try RedisConfiguration(url: "redis://:secret@localhost")
        #expect(passwordOnly.password == "secret")
        #expect(passwordOnly.endpoint == .tcp(host: "localhost", port: 6379))
        #expect(try RedisConfiguration(url: "/run/redis.sock").endpoint == .unix(path: "/run/redis.sock"))
        #expect(try RedisConfiguration(url: "unix:///run/r.sock?db=2").database == 2)
        #expect(throws: RedisError.self) { try RedisConfiguration(url: "http://nope") }
    }
}
