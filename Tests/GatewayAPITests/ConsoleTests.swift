import Console
import Foundation
import GatewayAPI
import HTTPSurface
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import OutboxCore
import OutboxStore
import PostgresClient
import Testing
import TestSupport

/// The console in process, on the gateway's router: what the browser test cannot see from the
/// outside (the cookie's attributes behind TLS, escaping, a revoked key's login, scoping of the
/// stream). ConsoleBrowserTests drives it in a real browser.
@Suite("console")
struct ConsoleTests {
    static let token = "in-process-console-token"

    struct Answer {
        var status: Int
        var headers: HTTPFields
        var body: String
    }

    typealias Call = @Sendable (HTTPRequest.Method, String, [String: String], HTTPFields) async throws -> Answer

    func withConsole(_ body: @Sendable (PostgresDatabase, @escaping Call) async throws -> Void) async throws {
        // The stream tests' server: a cursor read waits for every older write transaction in its cluster.
        let url = try await TestEnvironment.freshStreamDatabase(prefix: "console")
        let database = PostgresDatabase(configuration: PostgresConfiguration(url), maxConnections: 4, logger: TestEnvironment.logger)
        try await Migrator(migrations: try Migration.load(directory: TestEnvironment.migrationsDirectory), logger: TestEnvironment.logger).migrate(database)
        let router = Router(context: GatewayContext.self)
        router.add(middleware: APIErrorMiddleware<GatewayContext>())
        Console(database: database, adminToken: Self.token, logger: TestEnvironment.logger).register(on: router)
        try await Application(router: router).test(.router) { client in
            try await body(database) { method, uri, form, headers in
                var headers = headers
                headers[.contentType] = "application/x-www-form-urlencoded"
                let encoded = form.map { "\($0.key)=\($0.value.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "")" }.joined(separator: "&")
                return try await client.execute(uri: uri, method: method, headers: headers, body: ByteBuffer(string: encoded)) { response in
                    Answer(status: Int(response.status.code), headers: response.headers, body: String(buffer: response.body))
                }
            }
        }
        await database.close()
    }

    static func cookie(_ answer: Answer) -> HTTPFields {
        let value = (answer.headers[.setCookie] ?? "").split(separator: ";")[0]
        var headers = HTTPFields()
        headers[.cookie] = String(value)
        return headers
    }

    static func csrf(_ page: String) throws -> String {
        let marker = "name=\"csrf\" value=\""
        let start = try #require(page.range(of: marker)).upperBound
        return String(page[start...].prefix(64))
    }

    @Test func theLoginCookieIsSecureBehindTLSAndBodiesAreEscaped() async throws {
        try await withConsole { database, call in
            try await SessionRegistry.upsert(SessionRecord(id: "s1", org: "org1", engine: "sim"), in: database)
            let job = try await Outbox.enqueue(EnqueueRequest(org: "org1", session: "s1", kind: .send, payload: """
                {"chat": "491510000001@s.whatsapp.net", "type": "text", "text": "<script>alert(1)</script>"}
                """), in: database)
            var tls = HTTPFields()
            tls[HTTPField.Name("X-Forwarded-Proto")!] = "https"
            #expect(try await call(.post, "/console/login", ["token": Self.token], tls).status == 400)  // no name
            let login = try await call(.post, "/console/login", ["token": Self.token, "operator": "ann"], tls)
            #expect(login.status == 303)
            let setCookie = login.headers[.setCookie] ?? ""
            for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/console"] { #expect(setCookie.contains(attribute), "\(setCookie)") }
            let plain = try await call(.post, "/console/login", ["token": Self.token, "operator": "ann"], [:])
            #expect(!(plain.headers[.setCookie] ?? "").contains("Secure"))

            let cookie = Self.cookie(login)
            let page = try await call(.get, "/console/jobs/\(job.outboxId)", [:], cookie)
            #expect(page.status == 200 && page.headers[.contentSecurityPolicy]?.contains("script-src 'self'") == true)
            #expect(!page.body.contains("alert(1)"), "the body is not shown before the click")
            let shown = try await call(.post, "/console/jobs/\(job.outboxId)/body", ["csrf": try Self.csrf(page.body)], cookie)
            #expect(shown.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"))
            #expect(!shown.body.contains("<script>alert"))
            #expect(try await database.query("SELECT count(*)::int8 FROM wa_outbox.audit WHERE action = 'view_body' AND actor = 'ann'")[0]
                .decode(Int.self, at: 0) == 1)
        }
    }

    @Test func aKeysOperatorIsScopedAndARevokedKeyEndsItsLogin() async throws {
        try await withConsole { database, call in
            for (org, session) in [("org1", "a1"), ("org2", "b1")] {
                try await SessionRegistry.upsert(SessionRecord(id: session, org: org, engine: "sim"), in: database)
                _ = try await Outbox.enqueue(EnqueueRequest(org: org, session: session, kind: .send, payload: """
                    {"chat": "491510000001@s.whatsapp.net", "type": "text", "text": "hello \(org)"}
                    """), in: database)
            }
            let key = try await APIKeys.create(org: "org2", name: "ops-bot", permissions: ["operate"], in: database)
            let login = try await call(.post, "/console/login", ["token": key.key], [:])
            #expect(login.status == 303)
            let cookie = Self.cookie(login)
            // The events become readable once every older transaction of the cluster has ended (a liveness bound, not a timing).
            var stream = try await call(.get, "/console/stream/events?cursor=0.0", [:], cookie)
            for _ in 0..<300 where stream.status == 200 && !stream.body.contains("\"org2\"") {
                try await Task.sleep(for: .milliseconds(100))
                stream = try await call(.get, "/console/stream/events?cursor=0.0", [:], cookie)
            }
            #expect(stream.status == 200 && stream.body.contains("\"org2\"") && !stream.body.contains("\"org1\""), "\(stream.body)")
            let jobs = try await call(.get, "/console/jobs", [:], cookie)
            #expect(jobs.body.contains("<td>b1</td>") && !jobs.body.contains("<td>a1</td>"))
            #expect(jobs.body.contains("ops-bot"), "the key's name is the operator's when none was given")

            try await APIKeys.revoke(id: key.record.id, in: database)
            let after = try await call(.get, "/console/jobs", [:], cookie)
            #expect(after.status == 303 && after.headers[.location] == "/console/login")
            let action = try await call(.post, "/console/actions/plan", ["csrf": "x", "action": "replay", "reason": "r", "id": "1"], cookie)
            #expect(action.status == 401)
        }
    }
}
