import Foundation
import Hummingbird
import NIOCore
import NIOPosix

/// The API's contract, `openapi.json` (OpenAPI 3.1) beside this file, served at `/openapi.json`.
///
/// Read once, on NIO's blocking thread pool (never on a cooperative thread), then kept.
actor OpenAPIDocument {
    static let shared = OpenAPIDocument()
    private var bytes: ByteBuffer?

    func body() async throws -> ByteBuffer {
        if let bytes { return bytes }
        guard let url = Bundle.module.url(forResource: "openapi", withExtension: "json") else {
            throw HTTPError(.internalServerError, message: "openapi.json is missing from this build")
        }
        let data = try await NIOThreadPool.singleton.runIfActive { try Data(contentsOf: url) }
        let loaded = ByteBuffer(bytes: data)
        bytes = loaded
        return loaded
    }

    static func register(on router: Router<GatewayContext>) {
        router.get("/openapi.json") { _, _ -> Response in
            var response = Response(status: .ok, body: .init(byteBuffer: try await shared.body()))
            response.headers[.contentType] = "application/json"
            return response
        }
    }
}
