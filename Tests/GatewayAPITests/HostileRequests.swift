import Foundation
import HTTPTypes
import TestSupport

/// A hostile HTTP request to the gateway API, and the answers allowed for it.
struct HostileRequest: CustomStringConvertible {
    var category: String
    var method: HTTPRequest.Method
    var uri: String
    var headers: [(String, String)]
    var body: [UInt8]
    /// (status, error code) pairs any one of which is a correct answer.
    var allowed: [(UInt, String)]

    var description: String {
        "\(category): \(method) \(uri.prefix(120)) \(headers.map { "\($0.0): \($0.1.prefix(60))" }) body \(body.count) bytes: "
            + String(decoding: body.prefix(160), as: UTF8.self)
    }

    static let refused = [(UInt(400), "validation_error")]
    static let goodBody = Array(#"{"type":"text","chat":"\#(HostileInput.goodChat)","text":"hello"}"#.utf8)
    static let json = [("Content-Type", "application/json")]

    /// One hostile request: mostly a hostile payload (`HostileInput`), otherwise a hostile part of
    /// the request around a well-formed payload.
    static func draw(using rng: inout SplitMix64) -> HostileRequest {
        switch Int.random(in: 0..<100, using: &rng) {
        case 0..<64: return payload(HostileInput.payload(using: &rng), using: &rng)
        case 64..<74: return wrongContentType(using: &rng)
        case 74..<84: return hostileSession(using: &rng)
        case 84..<94: return hostileHeaderOrQuery(using: &rng)
        case 94..<99: return hostileMessageID(using: &rng)
        default:
            let body = Array(#"{"type":"text","chat":"\#(HostileInput.goodChat)","text":""#.utf8)
                + Array(repeating: UInt8(ascii: "a"), count: 512 * 1024 + Int.random(in: 1...4_096, using: &rng)) + Array(#""}"#.utf8)
            return HostileRequest(category: "oversized body", method: .post, uri: "/api/v1/sessions/s1/messages?async=true",
                                  headers: json, body: body, allowed: [(413, "payload_too_large")])
        }
    }

    static func payload(_ payload: HostilePayload, using rng: inout SplitMix64) -> HostileRequest {
        let contentType = Bool.random(using: &rng) ? json : [("Content-Type", "application/json; charset=utf-8")]
        switch payload.kind {
        case .send:
            let mode = ["?async=true", "?async=1", ""].randomElement(using: &rng)!
            return HostileRequest(category: payload.category, method: .post, uri: "/api/v1/sessions/s1/messages\(mode)",
                                  headers: contentType, body: payload.body, allowed: refused)
        case .edit, .revoke:
            // The message id travels in the path; a hostile one is refused there (below).
            let object = try? JSONSerialization.jsonObject(with: Data(payload.body)) as? [String: Any]
            let mid = object?["messageId"] as? String == "3EB0AAAA" ? "3EB0AAAA" : String(repeating: "A", count: 257)
            return HostileRequest(category: payload.category, method: payload.kind == .edit ? .patch : .delete,
                                  uri: "/api/v1/sessions/s1/messages/\(mid)", headers: contentType, body: payload.body, allowed: refused)
        }
    }

    static func wrongContentType(using rng: inout SplitMix64) -> HostileRequest {
        let type = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml", "text/json",
                    "application/jsonp", "application/json-seq", "*/*", "", "garbage/;;;", "application/octet-stream", "json",
                    "text/html; charset=utf-8", "application/javascript"].randomElement(using: &rng)!
        return HostileRequest(category: "wrong content type", method: .post, uri: "/api/v1/sessions/s1/messages?async=true",
                              headers: [("Content-Type", type)], body: goodBody, allowed: refused)
    }

    static func hostileSession(using rng: inout SplitMix64) -> HostileRequest {
        let session = ["s1%00", "s1%00x", "%00", "s1%0A", "s1%1B", "s1%7F", String(repeating: "s", count: 257), "s1%27%3B%20DROP%20TABLE%20x",
                       "s1%FF", "%C3%28", "..%2F..%2Fetc", "s1%22%29%3B--", "%E2%80%AE", "s1%20"].randomElement(using: &rng)!
        return HostileRequest(category: "hostile session id", method: .post, uri: "/api/v1/sessions/\(session)/messages?async=true",
                              headers: json, body: goodBody, allowed: refused + [(404, "not_found")])
    }

    static func hostileHeaderOrQuery(using rng: inout SplitMix64) -> HostileRequest {
        var request = HostileRequest(category: "hostile idempotency key", method: .post, uri: "/api/v1/sessions/s1/messages?async=true",
                                     headers: json, body: goodBody, allowed: refused)
        switch Int.random(in: 0..<4, using: &rng) {
        case 0: request.headers.append(("Idempotency-Key", String(repeating: "k", count: Int.random(in: 256...2_000, using: &rng))))
        case 1: request.headers.append(("Idempotency-Key", "key\t\(rng.next())\u{7F}"))
        case 2: request.headers.append(("Idempotency-Key", "\"\(String(repeating: "q", count: 256))\""))
        default:
            request.category = "hostile async parameter"
            request.uri = "/api/v1/sessions/s1/messages?async=" + ["maybe", "%00", "2", "true%00", "yes", "%FF", "-1"].randomElement(using: &rng)!
        }
        return request
    }

    static func hostileMessageID(using rng: inout SplitMix64) -> HostileRequest {
        let mid = [String(repeating: "M", count: 257 + Int.random(in: 0...100, using: &rng)), "%00", "3EB0%0A", "3EB0%00AA"].randomElement(using: &rng)!
        let body = Array(#"{"chat":"\#(HostileInput.goodChat)","text":"new","sentAt":\#(Int(Date().timeIntervalSince1970) - 60)}"#.utf8)
        return HostileRequest(category: "hostile message id", method: Bool.random(using: &rng) ? .patch : .delete,
                              uri: "/api/v1/sessions/s1/messages/\(mid)", headers: json, body: body, allowed: refused)
    }
}
