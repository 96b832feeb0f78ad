import AsyncHTTPClient
import Foundation
import GatewayAPI
import HTTPSurface
import Hummingbird
import HummingbirdTesting
import NIOCore
import NIOHTTP1
import Testing

/// A header block over the limits answers 431 in the error envelope, over a real socket.
@Suite("Gateway API: header limits")
struct HeaderLimitTests {
    func get(_ port: Int, _ headers: [(String, String)]) async throws -> (status: UInt, body: String, connection: String?) {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/api/v1/messages/1")
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        return (response.status.code, String(buffer: try await response.body.collect(upTo: 1 << 20)), response.headers.first(name: "connection"))
    }

    @Test func anOversizedHeaderBlockAnswers431WithTheEnvelope() async throws {
        let fixture = try await GatewayFixture.make()
        let app = Application(router: fixture.router(), server: HeaderLimits.server)
        try await app.test(.live) { client in
            let port = try #require(client.port)
            // Just under the limit: an ordinary answer (no credentials: 401).
            let fits = try await get(port, [("X-Padding", String(repeating: "a", count: HeaderLimits.maxBytes - 200))])
            #expect(fits.status == 401)

            for headers in [[("X-Padding", String(repeating: "a", count: HeaderLimits.maxBytes + 1))],
                            (0..<5).map { ("X-Padding-\($0)", String(repeating: "b", count: HeaderLimits.maxBytes / 4)) },
                            (0...HeaderLimits.maxFields).map { ("X-Field-\($0)", "1") }] {
                let refused = try await get(port, headers)
                #expect(refused.status == 431)
                #expect(refused.connection == "close")
                let body = try JSONDecoder().decode(APIError.Envelope.self, from: Data(refused.body.utf8)).error
                #expect(body.code == "headers_too_large")
                #expect(body.details["maxBytes"] == String(HeaderLimits.maxBytes))
            }

            // The server goes on answering.
            #expect(try await get(port, []).status == 401)
        }
        await fixture.close()
    }
}
