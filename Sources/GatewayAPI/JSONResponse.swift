import Foundation
import HTTPTypes
import Hummingbird

/// JSON bodies, encoded one way everywhere: sorted keys, no escaped slashes.
enum JSONResponse {
    static func make(_ status: HTTPResponse.Status, _ value: some Encodable) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var response = Response(status: status, body: .init(byteBuffer: ByteBuffer(bytes: try encoder.encode(value))))
        response.headers[.contentType] = "application/json"
        return response
    }
}
