import AsyncHTTPClient
import Crypto
import Foundation
import GatewayAPI
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import NIOHTTP1
import OutboxStore
import PostgresClient
import Synchronization
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A migrated database of the test's own, filled through `wa_outbox.enqueue`.
struct EventFixture {
    let url: String
    let database: PostgresDatabase

    /// A new database on the server of the stream tests, or on `url` (a `PrivateServer` of the
    /// test's own, for a test that holds transactions open).
    static func make(url: String? = nil) async throws -> EventFixture {
        let url = if let url { url } else { try await TestEnvironment.freshStreamDatabase(prefix: "events") }
        let database = PostgresDatabase(configuration: PostgresConfiguration(url), maxConnections: 8, logger: TestEnvironment.logger)
        try await Migrator(migrations: try Migration.load(directory: TestEnvironment.migrationsDirectory), logger: TestEnvironment.logger).migrate(database)
        return EventFixture(url: url, database: database)
    }

    func addSession(_ id: String, org: String) async throws {
        try await SessionRegistry.upsert(SessionRecord(id: id, org: org, engine: "sim"), in: database)
    }

    /// Enqueues `count` text sends on `session` (one `queued` event each); returns the job ids in order.
    @discardableResult
    func enqueue(_ count: Int, session: String, org: String) async throws -> [Int64] {
        try await database.query("""
            SELECT (wa_outbox.enqueue(\(org), \(session), 'send',
                jsonb_build_object('type', 'text', 'text', 'message ' || g, 'chat', (4915100000000 + g % 7)::text || '@s.whatsapp.net'))).outbox_id
            FROM generate_series(1, \(count)) g ORDER BY g
            """).map { try $0.decode(Int64.self, at: 0) }
    }

    /// The last event id.
    func lastEventID() async throws -> Int64 {
        try await database.query("SELECT coalesce(max(id), 0)::int8 FROM wa_outbox.events")[0].decode(at: 0)
    }

    /// A hub on this database, with test timings.
    func hub(buffer: Int = 4_096, keepAlive: Duration = .seconds(15)) -> EventHub {
        var configuration = EventHub.Configuration()
        configuration.pollInterval = .milliseconds(200)
        configuration.subscriberBuffer = buffer
        configuration.keepAliveInterval = keepAlive
        return EventHub(database: database, listenerConfiguration: PostgresConfiguration(url), configuration: configuration, logger: TestEnvironment.logger)
    }
}

/// Test-only authentication: `X-Test-Org` and `X-Test-Capabilities` (comma-separated, default `read`).
struct TestAuthentication: RouterMiddleware {
    typealias Context = GatewayContext

    func handle(_ request: Request, context: GatewayContext, next: (Request, GatewayContext) async throws -> Response) async throws -> Response {
        var context = context
        if let org = request.headers[HTTPField.Name("X-Test-Org")!] {
            let capabilities = (request.headers[HTTPField.Name("X-Test-Capabilities")!] ?? "read").split(separator: ",")
                .compactMap { Capability(rawValue: String($0)) }
            context.principal = Principal(org: org, capabilities: Set(capabilities), subject: "test")
        }
        return try await next(request, context)
    }
}

/// Runs `body` with the hub running and the gateway listening on 127.0.0.1; returns its port to `body`.
func withGateway(_ fixture: EventFixture, hub: EventHub, tickets: StreamTickets = StreamTickets(secret: .init(size: .bits256)),
                 _ body: @Sendable @escaping (Int) async throws -> Void) async throws {
    let dependencies = GatewayDependencies(database: fixture.database, coordinator: nil, jobEvents: hub, logger: TestEnvironment.logger,
                                           events: EventRoutes(hub: hub, tickets: tickets))
    let router = Gateway.router(dependencies, authenticate: TestAuthentication())
    let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)), logger: TestEnvironment.logger)
    let running = Task { try await hub.run() }
    defer { running.cancel() }
    try await app.test(.live) { client in
        try await body(try #require(client.port))
    }
}

/// One parsed block of an event stream.
struct SSEMessage: Sendable, Equatable {
    var id: Int64?
    /// The `id:` line as sent: what a client echoes in `Last-Event-ID`, whatever its form.
    var lastEventID: String?
    var event: String?
    var data: String?
    var retry: String?
    var comments: [String] = []

    var json: [String: Any]? {
        data.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }
}

struct TimedOut: Error {}

/// The highest event id a stream reader has seen, for the test to watch.
final class Progress: Sendable {
    private let value = Mutex<Int64>(0)
    var current: Int64 { value.withLock { $0 } }
    func set(_ id: Int64) { value.withLock { $0 = max($0, id) } }
}

func withTimeout<T: Sendable>(_ limit: Duration, _ operation: @Sendable @escaping () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(for: limit)
            throw TimedOut()
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}

/// A streaming client: opens `path`, reads blocks until `done` says so (or the stream ends), then
/// disconnects. Returns the status and the blocks.
func readStream(port: Int, path: String, headers: [(String, String)] = [], timeout: Duration = .seconds(60),
                progress: Progress? = nil, until done: @Sendable @escaping ([SSEMessage]) -> Bool) async throws -> (status: Int, messages: [SSEMessage]) {
    let headerList = headers
    return try await withTimeout(timeout) {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        for (name, value) in headerList { request.headers.add(name: name, value: value) }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(120))
        var messages: [SSEMessage] = []
        guard response.status.code == 200 else { return (Int(response.status.code), messages) }
        var pending = ""
        do {
            for try await chunk in response.body {
                pending += String(buffer: chunk)
                // Every complete block; the incomplete tail waits for the next chunk.
                let blocks = pending.components(separatedBy: "\n\n")
                pending = blocks.last ?? ""
                for block in blocks.dropLast() {
                    let message = parse(block)
                    messages.append(message)
                    if let id = message.id { progress?.set(id) }
                }
                if done(messages) { return (200, messages) }
            }
        } catch is HTTPClientError {
            // The server cut the stream: what arrived is the answer.
        }
        return (200, messages)
    }
}

/// The status and body of a plain request.
func request(port: Int, method: String = "GET", _ path: String, headers: [(String, String)] = [], body: String? = nil,
             timeout: Duration = .seconds(10), client: HTTPClient = .shared) async throws -> (status: Int, body: String) {
    try await withTimeout(timeout) {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        request.method = NIOHTTP1.HTTPMethod(rawValue: method)
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(ByteBuffer(string: body)) }
        let response = try await client.execute(request, timeout: .seconds(timeout.components.seconds))
        // An open stream never ends: its status is the answer.
        if response.headers.first(name: "content-type") == "text/event-stream" { return (Int(response.status.code), "") }
        let body = try await response.body.collect(upTo: 1 << 20)
        return (Int(response.status.code), String(buffer: body))
    }
}

func parse(_ block: String) -> SSEMessage {
    var message = SSEMessage()
    for line in block.split(separator: "\n", omittingEmptySubsequences: false) {
        if line.hasPrefix(":") { message.comments.append(String(line.dropFirst()).trimmingCharacters(in: .whitespaces)); continue }
        let parts = line.split(separator: ":", maxSplits: 1).map(String.init)
        let value = parts.count > 1 ? String(parts[1].drop(while: { $0 == " " })) : ""
        switch parts.first {
        case "id":
            message.id = Int64(value)
            message.lastEventID = value
        case "event": message.event = value
        case "data": message.data = (message.data.map { $0 + "\n" } ?? "") + value
        case "retry": message.retry = value
        default: break
        }
    }
    return message
}

/// A client that sends a request and never reads: its socket takes a few kilobytes, then the server's writes wait.
final class StalledClient: Sendable {
    let socket: Int32

    init(port: Int, path: String, headers: [(String, String)]) throws {
        socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var size: Int32 = 4096
        setsockopt(socket, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw TimedOut() }
        let text = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers.map { "\($0.0): \($0.1)\r\n" }.joined() + "\r\n"
        _ = text.withCString { send(socket, $0, strlen($0), 0) }
    }

    deinit { close(socket) }
}
