import AsyncHTTPClient
import Foundation
import NIOHTTP1
import OutboxCore

/// Drives a wuzapi server over its HTTP API (header `Token`, one token per WhatsApp session).
///
/// wuzapi takes a caller-chosen message id (`Id`), so a retry after an ambiguous timeout resends
/// the same id and WhatsApp clients drop the repeat: duplicate-free by id.
public struct WuzapiEngine: SessionEngine {
    private let http: EngineHTTP

    public init(baseURL: String, token: String, requestTimeout: Duration = .seconds(30), client: HTTPClient? = nil) {
        http = EngineHTTP(name: "wuzapi", baseURL: baseURL, headers: [("Token", token)], requestTimeout: requestTimeout, client: client)
    }

    public var host: String? { http.host }

    public func perform(_ operation: WhatsAppOperation, session: String) async throws(DispatchFailure) -> EngineReceipt {
        let (path, body) = try Self.request(for: operation)
        let data = try await call(.POST, path, body: body)
        let reply = (try? JSONSerialization.jsonObject(with: data) as? [String: Any])?["data"] as? [String: Any]
        let timestamp = Self.timestamp(reply?["Timestamp"]) ?? Date()
        return EngineReceipt(messageID: reply?["Id"] as? String ?? operation.messageID, timestamp: timestamp)
    }

    public func status(session: String) async throws(DispatchFailure) -> EngineSessionStatus {
        let data = try await call(.GET, "/session/status", body: nil)
        let reply = (try? JSONSerialization.jsonObject(with: data) as? [String: Any])?["data"] as? [String: Any]
        return Self.sessionStatus(reply ?? [:])
    }

    /// `GET /session/status`: `connected`, `loggedIn` since mid-2025, `Connected`, `LoggedIn`
    /// before. Connected but not logged in is a session waiting for its QR code.
    static func sessionStatus(_ data: [String: Any]) -> EngineSessionStatus {
        let connected = (data["connected"] ?? data["Connected"]) as? Bool ?? false
        let loggedIn = (data["loggedIn"] ?? data["LoggedIn"]) as? Bool ?? false
        return connected ? (loggedIn ? .connected : .connecting) : .disconnected
    }

    /// A send's `Timestamp`: Unix seconds today, whatsmeow's `time.Time` (RFC 3339) before.
    static func timestamp(_ value: Any?) -> Date? {
        if let seconds = value as? NSNumber { return Date(timeIntervalSince1970: seconds.doubleValue) }
        guard let text = value as? String else { return nil }
        let formatter = ISO8601DateFormatter()
        if let date = formatter.date(from: text) { return date }
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.date(from: text)
    }

    /// The wuzapi endpoint and JSON body for an operation, as wuzapi's handlers read them.
    static func request(for operation: WhatsAppOperation) throws(DispatchFailure) -> (String, [String: EngineJSON]) {
        switch operation {
        case .send(let id, let chat, let content):
            let phone = EngineJSON.string(phone(chat))
            switch content {
            case .text(let text):
                return ("/chat/send/text", ["Phone": phone, "Body": .string(text), "Id": .string(id)])
            case .poll(let name, let options, let multipleAnswers):
                if multipleAnswers {
                    throw .permanent(.engineUnsupported, "wuzapi's polls are single-choice (one selectable answer); this poll allows several")
                }
                return ("/chat/send/poll", ["Group": .string(chat), "Header": .string(name), "Options": .strings(options), "Id": .string(id)])
            case .location(let latitude, let longitude, let name, _):
                if latitude == 0 || longitude == 0 {
                    throw .permanent(.engineUnsupported, "wuzapi takes a latitude or longitude of exactly 0 for a missing one and refuses the location")
                }
                return ("/chat/send/location", ["Phone": phone, "Latitude": .number(latitude), "Longitude": .number(longitude),
                                                "Name": .string(name ?? ""), "Id": .string(id)])
            case .contacts(let contacts):
                guard contacts.count == 1, let contact = contacts.first else {
                    throw .permanent(.validationError, "wuzapi sends one contact per message; enqueue one send per contact")
                }
                return ("/chat/send/contact", ["Phone": phone, "Name": .string(contact.name), "Vcard": .string(contact.vcardText), "Id": .string(id)])
            }
        case .edit(let id, let chat, let text):
            return ("/chat/send/edit", ["Phone": .string(phone(chat)), "Id": .string(id), "Body": .string(text)])
        case .revoke(let id, let chat, let sender):
            // `/chat/delete` reads Phone and Id and revokes as the sender of the message: another
            // participant's message would answer 200 "Deleted" and stay.
            if sender != nil {
                throw .permanent(.engineUnsupported, "wuzapi revokes only the session's own messages; revoking another participant's message needs WAHA")
            }
            return ("/chat/delete", ["Phone": .string(phone(chat)), "Id": .string(id)])
        }
    }

    /// wuzapi takes a bare number for users and a full JID for anything else.
    static func phone(_ chat: String) -> String {
        chat.hasSuffix("@s.whatsapp.net") ? String(chat.dropLast("@s.whatsapp.net".count)) : chat
    }

    /// A GET of `path`, its failures classified.
    func get(_ path: String) async throws(DispatchFailure) -> Data {
        try await call(.GET, path, body: nil)
    }

    private func call(_ method: HTTPMethod, _ path: String, body: [String: EngineJSON]?) async throws(DispatchFailure) -> Data {
        let (status, data) = try await http.call(method, path, json: body)
        if (200..<300).contains(status) { return data }
        throw Self.classify(status: status, body: String(decoding: data, as: UTF8.self), path: path)
    }

    /// Maps wuzapi's answers to the retry policy's classes from its status and its own error text
    /// (`{"code", "error", "success": false}`): "no session", and whatsmeow's error after "error
    /// sending message: " with WhatsApp's code in it (`server returned error 463`). A number
    /// elsewhere in the text is never read as a code. A path wuzapi does not route (gorilla/mux's
    /// plain-text 404) is an endpoint this version lacks.
    static func classify(status: UInt, body: String, path: String = "") -> DispatchFailure {
        let object = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
        if object == nil, status == 404 {
            return .permanent(.engineUnsupported, "this wuzapi version has no \(path) endpoint; a newer one has")
        }
        let text = (object?["error"] as? String) ?? (object == nil ? String(body.prefix(200)) : "")
        let lower = text.lowercased()
        if status == 429 { return .rateLimited(retryAfter: nil) }
        switch EngineErrors.whatsAppCode(in: lower) {
        case 463: return .permanent(.accountRestricted, "WhatsApp restricted this account (463): \(text)")
        case 429: return .rateLimited(retryAfter: nil)
        default: break
        }
        if lower == "no session" || lower.hasPrefix("no session,") {
            return .sessionNotConnected("wuzapi has no connected client for this session (\(text))")
        }
        // whatsmeow's ErrNotConnected and ErrNotLoggedIn: a session still connecting or waiting for its QR code.
        if lower.contains("websocket not connected") || lower.contains("the store doesn't contain a device jid") {
            return .sessionNotConnected(text)
        }
        switch status {
        case 400, 422: return .permanent(.validationError, text)
        case 401, 403: return .permanent(.engineError, "wuzapi refused the token: \(text)")
        case 404: return .permanent(.notFound, text)
        default: return .transient("wuzapi answered \(status): \(text)")
        }
    }
}
