import AsyncHTTPClient
import Foundation
import GatewayAPI
import HTTPSurface
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import PropertyBased
import Testing
import TestSupport

/// Hostile requests (`HostileRequest`) against the gateway's router, in process, by the thousand:
/// each is refused with `validation_error` (or 413, or 404 for a session id that is merely
/// unknown), in the error envelope, never with a 5xx; none changes a table; a well-formed send
/// between them is queued as usual. The same over a real socket, with the header limits: 431.
@Suite("Hostile input: the gateway API")
struct HostileHTTPTests {
    static let routerCases = 5_000
    static let socketCases = 300

    static let hostile: Generator<HostileRequest, Shrink.None<HostileRequest>> = Generator { rng in
        var seeded = SplitMix64(seed: rng.next())
        return HostileRequest.draw(using: &seeded)
    }

    static func check(_ request: HostileRequest, status: UInt, body: ByteBuffer, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(status < 500, "\(request) answered \(status)", sourceLocation: sourceLocation)
        guard let envelope = try? JSONDecoder().decode(APIError.Envelope.self, from: Data(buffer: body)) else {
            Issue.record("\(request) answered \(status) outside the envelope: \(String(buffer: body).prefix(300))", sourceLocation: sourceLocation)
            return
        }
        #expect(request.allowed.contains { $0.0 == status && $0.1 == envelope.error.code },
                "\(request) answered \(status) \(envelope.error.code): \(envelope.error.message)", sourceLocation: sourceLocation)
    }

    static func execute(_ client: some TestClientProtocol, _ request: HostileRequest, org: String = "org1") async throws -> TestResponse {
        var fields = headers(org: org)
        fields[.contentType] = nil
        for (name, value) in request.headers { fields.append(HTTPField(name: HTTPField.Name(name)!, value: value)) }
        return try await client.execute(uri: request.uri, method: request.method, headers: fields, body: ByteBuffer(bytes: request.body))
    }

    static func wellFormedSend(_ client: some TestClientProtocol) async throws {
        let response = try await client.execute(uri: "/api/v1/sessions/s1/messages?async=true", method: .post, headers: headers(),
                                                body: ByteBuffer(bytes: HostileRequest.goodBody))
        #expect(response.status == .accepted, "a well-formed send after hostile ones: \(String(buffer: response.body))")
    }

    @Test func everyHostileRequestIsRefusedAndChangesNothing() async throws {
        let fixture = try await GatewayFixture.make()
        try await fixture.addSession("s1")
        let app = Application(router: fixture.router(syncTimeout: .seconds(1)))
        let tally = Tally()
        try await app.test(.router) { client in
            var jobs = 0
            await propertyCheck(count: Self.routerCases, input: Self.hostile) { request async throws in
                tally.run += 1
                tally.byCategory[request.category, default: 0] += 1
                let response = try await Self.execute(client, request)
                Self.check(request, status: UInt(response.status.code), body: response.body)
                #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs") == jobs, "\(request) changed the jobs")
                if tally.run % 500 == 0 {
                    try await Self.wellFormedSend(client)
                    jobs += 1
                }
            }
            #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.events") == jobs)
            try await Self.wellFormedSend(client)
        }
        print("hostile-input cases: HTTP API in process \(tally.run) \(tally.byCategory.sorted { $0.key < $1.key })")
        #expect(tally.run == Self.routerCases)
        #expect(tally.byCategory.count >= HostileInput.categoryNames.count + 5, "every kind of hostile request was drawn")
        await fixture.close()
    }

    /// Over a real socket (NIO's HTTP parser, the header limits): the hostile requests above, plus
    /// header blocks over 16 KiB or 100 fields, which answer 431.
    @Test func overASocketTooWithHugeHeaders() async throws {
        let fixture = try await GatewayFixture.make()
        try await fixture.addSession("s1")
        let app = Application(router: fixture.router(syncTimeout: .seconds(1)), server: HeaderLimits.server)
        let tally = Tally()
        try await app.test(.live) { client in
            let huge: Generator<HostileRequest, Shrink.None<HostileRequest>> = Generator { rng in
                var seeded = SplitMix64(seed: rng.next())
                var request = HostileRequest.draw(using: &seeded)
                if Int.random(in: 0..<3, using: &seeded) == 0 {
                    request.category = "huge headers"
                    request.allowed = [(431, "headers_too_large")]
                    if Bool.random(using: &seeded) {
                        request.headers.append(("X-Padding", String(repeating: "h", count: HeaderLimits.maxBytes + Int.random(in: 1...1_024, using: &seeded))))
                    } else {
                        request.headers += (0...HeaderLimits.maxFields + Int.random(in: 0...10, using: &seeded)).map { ("X-Field-\($0)", "1") }
                    }
                }
                return request
            }
            let port = try #require(client.port)
            await propertyCheck(count: Self.socketCases, input: huge) { request async throws in
                tally.run += 1
                // A client of its own: the test client's connection does not survive the 431's close.
                var outgoing = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(request.uri)")
                outgoing.method = HTTPMethod(rawValue: request.method.rawValue)
                outgoing.headers.add(name: "X-Test-Org", value: "org1")
                for (name, value) in request.headers { outgoing.headers.add(name: name, value: value) }
                outgoing.body = .bytes(ByteBuffer(bytes: request.body))
                let response = try await HTTPClient.shared.execute(outgoing, timeout: .seconds(30))
                Self.check(request, status: response.status.code, body: try await response.body.collect(upTo: 1 << 20))
            }
            #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs") == 0)
            try await Self.wellFormedSend(client)
        }
        print("hostile-input cases: HTTP API over a socket \(tally.run)")
        #expect(tally.run == Self.socketCases)
        await fixture.close()
    }
}

/// Counts kept across the test client's closure (which runs its body once, to the end, before
/// the test reads them).
final class Tally: @unchecked Sendable {
    var run = 0
    var byCategory: [String: Int] = [:]
}
