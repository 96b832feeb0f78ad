import Foundation
import HTTPSurface
import HTTPTypes
import OutboxCore

/// A send request's body, checked before anything else happens.
///
/// The body is the outbox payload itself (README, *Payloads*): `type` chooses the message kind.
/// Media types answer 501 before any other check; fields are validated by `wa_outbox.enqueue`,
/// whose errors name the field.
struct SendBody {
    static let supported: Set<String> = ["text", "poll", "location", "contact"]
    static let notImplemented: Set<String> = ["image", "video", "audio", "document", "sticker"]

    /// The payload to enqueue, as JSON text.
    let payload: String

    init(_ data: Data) throws {
        let text = try RequestInput.utf8(data)
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw APIError.validation("the body must be a JSON object", details: ["field": "body"])
        }
        guard let type = object["type"] as? String else {
            throw APIError.validation("'type' is required: one of \(Self.supported.sorted().joined(separator: ", "))", details: ["field": "type"])
        }
        if Self.notImplemented.contains(type) {
            throw APIError(.notImplemented, .notImplemented, "sending '\(type)' messages is not implemented yet", details: ["field": "type"])
        }
        guard Self.supported.contains(type) else {
            throw APIError.validation("unknown type '\(type)': one of \(Self.supported.sorted().joined(separator: ", "))", details: ["field": "type"])
        }
        payload = text
    }

    /// The body of an edit (`chat`, `text`) or a revoke (`chat`, optional `sender`), as the outbox
    /// payload for message `mid`.
    static func targeting(_ mid: String, kind: JobKind, body data: Data) throws -> String {
        _ = try RequestInput.utf8(data)
        guard var object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw APIError.validation("the body must be a JSON object", details: ["field": "body"])
        }
        guard let chat = object["chat"] as? String, !chat.isEmpty else {
            throw APIError.validation("'chat' is required: the JID of the chat the message is in", details: ["field": "chat"])
        }
        if kind == .edit {
            guard let text = object["text"] as? String, !text.isEmpty else {
                throw APIError.validation("'text' is required and must not be empty", details: ["field": "text"])
            }
        }
        object["chat"] = chat
        object["messageId"] = mid
        return String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
    }
}

/// The `Idempotency-Key` header: a bare or quoted string (RFC 8941 sf-string, as the IETF draft
/// writes it), 1 to 255 characters.
enum IdempotencyKeyHeader {
    static func parse(_ value: String?) throws -> String? {
        guard var key = value?.trimmingCharacters(in: .whitespaces), !key.isEmpty else { return nil }
        if key.count >= 2, key.hasPrefix("\""), key.hasSuffix("\"") { key = String(key.dropFirst().dropLast()) }
        guard (1...255).contains(key.count) else {
            throw APIError.validation("Idempotency-Key must be 1 to 255 characters", details: ["field": "Idempotency-Key"])
        }
        try RequestInput.checkIdentifier(key, field: "Idempotency-Key")
        return key
    }
}
