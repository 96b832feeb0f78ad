import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOFoundationCompat
import Testing
import TestSupport

/// The contract the API publishes: a valid OpenAPI 3.1 document, served without credentials, that
/// names every route.
@Suite("Gateway API: OpenAPI document")
struct OpenAPIDocumentTests {
    @Test func theServedDocumentIsValidOpenAPIAndNamesEveryRoute() async throws {
        let fixture = try await GatewayFixture.make()
        let app = Application(router: fixture.router())
        let data = try await app.test(.router) { client in
            let response = try await client.execute(uri: "/openapi.json", method: .get)
            #expect(response.status == .ok)
            return Data(buffer: response.body)
        }
        let document = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(document["openapi"] as? String == "3.1.0")
        let paths = Set((document["paths"] as? [String: Any] ?? [:]).keys)
        for route in ["/api/v1/sessions/{session}/messages", "/api/v1/sessions/{session}/messages/{mid}", "/api/v1/messages/{outboxId}",
                      "/api/v1/events", "/api/v1/events/tickets", "/openapi.json"] {
            #expect(paths.contains(route), "\(route) is not in the document")
        }
        let file = try TestEnvironment.scratchDirectory("openapi").appendingPathComponent("openapi.json")
        try data.write(to: file)
        let validation = try await Subprocess.run(URL(fileURLWithPath: "/usr/bin/env"), ["python3", "-m", "openapi_spec_validator", file.path])
        #expect(validation.status == 0, "\(validation.output)")
        await fixture.close()
    }
}
