import Foundation
import HTTPSurface
import HTTPTypes
import Hummingbird

/// What every message request must be before its body is read: JSON by its `Content-Type`, and
/// path segments (percent-decoded) that can be an identifier (no control characters, NUL included, which PostgreSQL
/// text cannot hold; at most 256 characters). Refused with `validation_error`, so hostile input
/// never reaches the database as an error it would answer with 500.
enum RequestInput {
    static let maxIdentifier = 256

    /// A request without `Content-Type` is read as JSON; one that names another type is refused.
    static func requireJSON(_ request: Request) throws {
        guard let value = request.headers[.contentType] else { return }
        let type = value.split(separator: ";", maxSplits: 1).first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() } ?? ""
        guard type == "application/json" || (type.hasPrefix("application/") && type.hasSuffix("+json")) else {
            throw APIError.validation("the body must be JSON: send Content-Type: application/json, not \(value.prefix(100))",
                                      details: ["field": "Content-Type"])
        }
    }

    /// The path parameter `name`, percent-decoded (the router leaves `%20` as it came) and checked
    /// to be usable as an identifier.
    static func identifier(_ name: String, _ context: some RequestContext) throws -> String {
        guard let value = try context.parameters.require(name).removingPercentEncoding else {
            throw APIError.validation("\(name) is not valid percent-encoded UTF-8", details: ["field": name])
        }
        try checkIdentifier(value, field: name)
        return value
    }

    static func checkIdentifier(_ value: String, field: String) throws {
        guard !value.isEmpty, value.unicodeScalars.count <= maxIdentifier else {
            throw APIError.validation("\(field) must be 1 to \(maxIdentifier) characters", details: ["field": field])
        }
        guard !value.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw APIError.validation("\(field) must not contain control characters", details: ["field": field])
        }
    }

    /// The body as UTF-8 text: invalid UTF-8 is refused rather than repaired into U+FFFD; so is
    /// JSON nested deeper than `maxNesting`, before a recursive parser sees it (the outbox takes
    /// 16 levels; `wa_outbox.validate_payload` refuses the rest).
    static func utf8(_ data: Data) throws -> String {
        guard let text = String(validating: data, as: UTF8.self) else {
            throw APIError.validation("the body is not valid UTF-8", details: ["field": "body"])
        }
        try checkNesting(data)
        return text
    }

    static let maxNesting = 64

    static func checkNesting(_ data: Data) throws {
        var depth = 0
        var inString = false
        var escaped = false
        for byte in data {
            if inString {
                if escaped { escaped = false } else if byte == UInt8(ascii: "\\") { escaped = true } else if byte == UInt8(ascii: "\"") { inString = false }
                continue
            }
            switch byte {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                depth += 1
                guard depth <= maxNesting else {
                    throw APIError.validation("the body nests deeper than \(maxNesting) levels", details: ["field": "body"])
                }
            case UInt8(ascii: "]"), UInt8(ascii: "}"): depth -= 1
            default: break
            }
        }
    }
}
