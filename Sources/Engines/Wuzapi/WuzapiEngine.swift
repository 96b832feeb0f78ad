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
        let reply = try? JSONDecoder().decode(WuzapiReply.self, from: data)
        let seconds = reply?.data?.Timestamp ?? Date().timeIntervalSince1970
        return EngineReceipt(messageID: reply?.data?.Id ?? operation.messageID, timestamp: Date(timeIntervalSince1970: seconds))
    }

    public func status(session: String) async throws(DispatchFailure) -> EngineSessionStatus {
        let data = try await call(.GET, "/session/status", body: nil)
        let reply = try? JSONDecoder().decode(WuzapiStatusReply.self, from: data)
        guard let status = reply?.data else { return .disconnected }
        return status.Connected == true && status.LoggedIn != false ? .connected : .disconnected
    }

    /// The wuzapi endpoint and JSON body for an operation, as wuzapi's handlers read them.
    static func request(for operation: WhatsAppOperation) throws(DispatchFailure) -> (String, [String: EngineJSON]) {
        switch operation {
        case .send(let id, let chat, let content):
            let phone = EngineJSON.string(phone(chat))
            switch content {
            case .text(let text):
                return ("/chat/send/text", ["Phone": phone, "Body": .string(text), "Id": .string(id)])
            case .poll(let name, let options, _):
                return ("/chat/send/poll", ["Group": .string(chat), "Header": .string(name), "Options": .strings(options), "Id": .string(id)])
            case .location(let latitude, let longitude, let name, _):
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
            var body: [String: EngineJSON] = ["Phone": .string(phone(chat)), "Id": .string(id)]
            if let sender { body["Participant"] = .string(sender) }
            return ("/chat/delete", body)
        }
    }

    /// wuzapi takes a bare number for users and a full JID for anything else.
    static func phone(_ chat: String) -> String {
        chat.hasSuffix("@s.whatsapp.net") ? String(chat.dropLast("@s.whatsapp.net".count)) : chat
    }

    private func call(_ method: HTTPMethod, _ path: String, body: [String: EngineJSON]?) async throws(DispatchFailure) -> Data {
        let (status, data) = try await http.call(method, path, json: body)
        if (200..<300).contains(status) { return data }
        throw Self.classify(status: status, body: String(decoding: data, as: UTF8.self))
    }

    /// Maps wuzapi's answers to the retry policy's classes. wuzapi reports most send errors as a
    /// 500 whose text carries whatsmeow's error (and WhatsApp's code, such as 429 or 463).
    static func classify(status: UInt, body: String) -> DispatchFailure {
        let text = ((try? JSONDecoder().decode(WuzapiReply.self, from: Data(body.utf8)))?.error ?? body).lowercased()
        if status == 429 || text.contains("429") || text.contains("rate-overlimit") { return .rateLimited(retryAfter: nil) }
        if text.contains("463") || text.contains("restricted") { return .permanent(.accountRestricted, "WhatsApp restricted this account (463): \(text)") }
        if text.contains("no session") || text.contains("not connected") || text.contains("not logged in") {
            return .sessionNotConnected(text)
        }
        if text.contains("not on whatsapp") || text.contains("invalid phone") || text.contains("could not parse phone") {
            return .permanent(.invalidRecipient, text)
        }
        if text.contains("edit window") { return .permanent(.editWindowExpired, text) }
        if text.contains("revoke window") { return .permanent(.revokeWindowExpired, text) }
        if text.contains("message not found") { return .permanent(.notFound, text) }
        switch status {
        case 400, 422: return .permanent(.validationError, text)
        case 401, 403: return .permanent(.engineError, "wuzapi refused the token: \(text)")
        case 404: return .permanent(.notFound, text)
        default: return .transient("wuzapi answered \(status): \(text)")
        }
    }
}

struct WuzapiReply: Decodable {
    struct Payload: Decodable {
        var Id: String?
        var Timestamp: Double?
    }
    var code: Int?
    var success: Bool?
    var data: Payload?
    var error: String?
}

struct WuzapiStatusReply: Decodable {
    struct Payload: Decodable {
        var Connected: Bool?
        var LoggedIn: Bool?
    }
    var data: Payload?
}
