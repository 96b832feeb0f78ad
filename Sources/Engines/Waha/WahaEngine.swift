import AsyncHTTPClient
import Foundation
import NIOHTTP1
import OutboxCore

/// Drives a WAHA server over its HTTP API (header `X-Api-Key`; the session is named in the body or
/// the path; users are `NUMBER@c.us`).
///
/// WAHA takes no caller-chosen message id, so a retry after an ambiguous timeout could deliver
/// twice. The worker calls `reconcile` first: it lists the chat's recent messages and returns the
/// session's own ones that match, so the job adopts the message instead of re-sending it.
/// Duplicate-free unless the message cannot be seen in the chat's recent history.
public struct WahaEngine: SessionEngine {
    private let http: EngineHTTP
    /// How many of a chat's latest messages reconciliation reads.
    static let reconcileWindow = 50

    public init(baseURL: String, apiKey: String, requestTimeout: Duration = .seconds(30), client: HTTPClient? = nil) {
        http = EngineHTTP(name: "WAHA", baseURL: baseURL, headers: [("X-Api-Key", apiKey), ("Accept", "application/json")],
                          requestTimeout: requestTimeout, client: client)
    }

    public var host: String? { http.host }

    /// WAHA's send bodies take no message id and its answers carry one it picked (fixtures
    /// `waha-requests.json`, `waha-responses.json` and `engines/waha-current.json`, which cite
    /// devlikeapro/waha's `src/core/utils/ids.ts` and the GOWS session at their commits).
    public var choosesMessageIDs: Bool { true }

    public func perform(_ operation: WhatsAppOperation, session: String) async throws(DispatchFailure) -> EngineReceipt {
        let (method, path, body) = try Self.request(for: operation, session: session)
        let data = try await call(method, path, body: body, doing: Self.describe(operation))
        guard case .send = operation else { return EngineReceipt(messageID: operation.messageID, timestamp: Date()) }
        guard let id = Self.messageID(in: data, chat: Self.chatID(operation.chat)) else {
            // Sent, but the answer names no id: the job succeeds; edits of it will fail clearly.
            return EngineReceipt(messageID: operation.messageID, timestamp: Date())
        }
        return EngineReceipt(messageID: id, timestamp: Date())
    }

    public func status(session: String) async throws(DispatchFailure) -> EngineSessionStatus {
        let data: Data
        do {
            data = try await call(.GET, "/api/sessions/\(Self.pathComponent(session))", body: nil, doing: "read the session's status")
        } catch {
            // 404 "We didn't find a session …": not running, so not connected.
            if case .sessionNotConnected = error { return .disconnected }
            throw error
        }
        let status = (try? JSONSerialization.jsonObject(with: data) as? [String: Any])?["status"] as? String
        return Self.sessionStatus(status ?? "")
    }

    public func reconcile(_ operation: WhatsAppOperation, session: String, since: Date) async throws(DispatchFailure) -> [EngineReceipt] {
        guard case .send(_, let chat, let content) = operation else { return [] }
        let chatID = Self.chatID(chat)
        let path = "/api/\(Self.pathComponent(session))/chats/\(Self.pathComponent(chatID))/messages?limit=\(Self.reconcileWindow)&downloadMedia=false"
        let data = try await call(.GET, path, body: nil, doing: "list the chat's messages to see whether the timed-out attempt arrived")
        guard let messages = try? JSONSerialization.jsonObject(with: data) as? [[String: Any]] else { return [] }
        // A minute of slack for clock skew between this host and the engine's.
        let earliest = since.timeIntervalSince1970 - 60
        return messages.compactMap { message -> (EngineReceipt, Double)? in
            guard message["fromMe"] as? Bool == true, Self.matches(message, content) else { return nil }
            let timestamp = (message["timestamp"] as? Double) ?? 0
            guard timestamp >= earliest, let id = Self.messageID(in: message, chat: chatID) else { return nil }
            return (EngineReceipt(messageID: id, timestamp: Date(timeIntervalSince1970: timestamp)), timestamp)
        }
        .sorted { $0.1 > $1.1 }
        .map(\.0)
    }

    // MARK: Requests

    /// The WAHA endpoint, method and JSON body for an operation, as WAHA's API documents them.
    static func request(for operation: WhatsAppOperation, session: String) throws(DispatchFailure) -> (HTTPMethod, String, [String: EngineJSON]?) {
        let chatID = chatID(operation.chat)
        let base: [String: EngineJSON] = ["session": .string(session), "chatId": .string(chatID)]
        switch operation {
        case .send(_, _, let content):
            switch content {
            case .text(let text):
                return (.POST, "/api/sendText", base.merging(["text": .string(text)]) { $1 })
            case .poll(let name, let options, let multipleAnswers):
                return (.POST, "/api/sendPoll", base.merging(["poll": .object([
                    "name": .string(name), "options": .strings(options), "multipleAnswers": .bool(multipleAnswers),
                ])]) { $1 })
            case .location(let latitude, let longitude, let name, _):
                var body = base.merging(["latitude": .number(latitude), "longitude": .number(longitude)]) { $1 }
                if let name { body["title"] = .string(name) }
                return (.POST, "/api/sendLocation", body)
            case .contacts(let contacts):
                return (.POST, "/api/sendContactVcard", base.merging(["contacts": .array(contacts.map { .object(["vcard": .string($0.vcardText)]) })]) { $1 })
            }
        case .edit(let id, _, let text):
            let message = serializedID(id, chat: chatID, sender: nil)
            return (.PUT, "/api/\(pathComponent(session))/chats/\(pathComponent(chatID))/messages/\(pathComponent(message))", ["text": .string(text)])
        case .revoke(let id, _, let sender):
            let message = serializedID(id, chat: chatID, sender: sender)
            return (.DELETE, "/api/\(pathComponent(session))/chats/\(pathComponent(chatID))/messages/\(pathComponent(message))", nil)
        }
    }

    /// The id WAHA's edit and delete paths take (`parseMessageIdSerialized` in WAHA's
    /// `src/core/utils/ids.ts`): an id WAHA gave us stays as it is; a bare key id (a message not
    /// sent through the outbox) becomes `true_<chat>_<id>` for our own message, and
    /// `false_<chat>_<id>` (direct chat) or `false_<chat>_<id>_<participant>` (group) for another's.
    static func serializedID(_ id: String, chat: String, sender: String?) -> String {
        if id.hasPrefix("true_") || id.hasPrefix("false_") { return id }
        guard let sender else { return "true_\(chat)_\(id)" }
        return chat.hasSuffix("@g.us") ? "false_\(chat)_\(id)_\(chatID(sender))" : "false_\(chat)_\(id)"
    }

    /// What an operation does, for error messages.
    static func describe(_ operation: WhatsAppOperation) -> String {
        switch operation {
        case .send(_, _, let content):
            switch content {
            case .text: "send a text"
            case .poll: "send a poll (sendPoll)"
            case .location: "send a location (sendLocation)"
            case .contacts: "send a contact (sendContactVcard)"
            }
        case .edit: "edit a message"
        case .revoke: "revoke a message"
        }
    }

    /// WAHA writes users as `NUMBER@c.us`; groups and other JIDs are unchanged.
    public static func chatID(_ chat: String) -> String {
        chat.hasSuffix("@s.whatsapp.net") ? String(chat.dropLast("@s.whatsapp.net".count)) + "@c.us" : chat
    }

    static func pathComponent(_ value: String) -> String {
        value.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/?#"))) ?? value
    }

    static func sessionStatus(_ status: String) -> EngineSessionStatus {
        switch status.uppercased() {
        case "WORKING": .connected
        case "STARTING", "SCAN_QR_CODE": .connecting
        default: .disconnected
        }
    }

    // MARK: Answers

    /// The sent message's id, from whichever shape this WAHA engine answers with: `id` as a string
    /// (WEBJS), `id._serialized` or `id.id` (objects), `key.id` (NOWEB, GOWS), or the same under
    /// `_data`. A bare key id becomes `true_CHAT_KEYID`, the form WAHA's edit and delete paths take.
    static func messageID(in data: Data, chat: String) -> String? {
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
        return messageID(in: object, chat: chat)
    }

    static func messageID(in object: [String: Any], chat: String) -> String? {
        func serialized(_ key: String) -> String {
            key.hasPrefix("true_") || key.hasPrefix("false_") ? key : "true_\(chat)_\(key)"
        }
        if let id = object["id"] as? String, !id.isEmpty { return serialized(id) }
        if let id = object["id"] as? [String: Any] {
            if let value = id["_serialized"] as? String, !value.isEmpty { return value }
            if let value = id["id"] as? String, !value.isEmpty { return serialized(value) }
        }
        if let key = object["key"] as? [String: Any], let value = key["id"] as? String, !value.isEmpty { return serialized(value) }
        if let inner = object["_data"] as? [String: Any] { return messageID(in: inner, chat: chat) }
        return nil
    }

    /// Whether a listed message is this content: the same text, poll name, place or contact.
    static func matches(_ message: [String: Any], _ content: MessageContent) -> Bool {
        let body = message["body"] as? String
        switch content {
        case .text(let text):
            return body == text
        case .poll(let name, _, _):
            return body == name || (message["poll"] as? [String: Any])?["name"] as? String == name
        case .location(let latitude, let longitude, _, _):
            guard let location = message["location"] as? [String: Any],
                  let lat = (location["latitude"] as? Double) ?? Double(location["latitude"] as? String ?? ""),
                  let long = (location["longitude"] as? Double) ?? Double(location["longitude"] as? String ?? "") else { return false }
            return abs(lat - latitude) < 1e-6 && abs(long - longitude) < 1e-6
        case .contacts(let contacts):
            guard let first = contacts.first else { return false }
            let vcards = ((message["vCards"] as? [String]) ?? []) + [body ?? ""]
            return vcards.contains { $0.contains(first.name) }
        }
    }

    /// A GET of `path`, its failures classified.
    func get(_ path: String) async throws(DispatchFailure) -> Data {
        try await call(.GET, path, body: nil, doing: "read \(path)")
    }

    private func call(_ method: HTTPMethod, _ path: String, body: [String: EngineJSON]?, doing: String) async throws(DispatchFailure) -> Data {
        let (status, data) = try await http.call(method, path, json: body)
        if (200..<300).contains(status) { return data }
        throw Self.classify(status: status, body: String(decoding: data, as: UTF8.self), doing: doing)
    }

    /// Maps WAHA's answers to the retry policy's classes from structured fields only: the status,
    /// the text of WAHA's own error (an HttpException's `message`, the `error` of a session that
    /// is not WORKING, the `exception.message` behind a 500) and WhatsApp's code inside it. Never
    /// from the whole body: a 500 from `AllExceptionsFilter` echoes the request (chat id, text)
    /// and a stack trace. `doing` names the operation in the messages.
    static func classify(status: UInt, body: String, doing: String = "do this") -> DispatchFailure {
        let object = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
        let exception = object?["exception"] as? [String: Any]
        let text: String = if let exception {
            exception["message"] as? String ?? ""
        } else if let message = object?["message"] as? String {
            message
        } else if let messages = object?["message"] as? [String] {
            messages.joined(separator: "; ")
        } else if let error = object?["error"] as? String {
            error
        } else {
            object == nil ? String(body.prefix(200)) : ""
        }
        if status == 429 { return .rateLimited(retryAfter: nil) }
        switch EngineErrors.whatsAppCode(in: text) {
        case 463: return .permanent(.accountRestricted, "WhatsApp restricted this account (463): \(text)")
        case 429: return .rateLimited(retryAfter: nil)
        default: break
        }
        switch status {
        case 404 where text.hasPrefix("We didn't find a session with name"):
            return .sessionNotConnected("the WAHA session is not running: \(text.prefix { $0 != "\n" })")
        case 422 where text.hasPrefix("Session status is not as expected"):
            let state = (object?["status"] as? String).map { " (\($0))" } ?? ""
            return .sessionNotConnected("the WAHA session is not WORKING\(state)")
        case 422 where text.hasPrefix("The method is not implemented by the engine"):
            return .permanent(.engineUnsupported, "this WAHA engine (WEBJS, NOWEB or GOWS) cannot \(doing): \(text)")
        case 422 where text.contains("is available only in Plus version"):
            return .permanent(.engineUnsupported, "WAHA Core cannot \(doing); it needs WAHA Plus: \(text)")
        case 422 where text.hasPrefix("WAHA Core support only 'default' session"):
            return .permanent(.engineUnsupported, "WAHA Core serves only the 'default' session; other sessions need WAHA Plus")
        case 400 where text.hasPrefix("Enable NOWEB store"):
            return .permanent(.engineUnsupported, "WAHA NOWEB without its store cannot \(doing), so the message is not sent again "
                              + "(it may have arrived). Enable the NOWEB store, or retry the job by hand to send it anyway.")
        case 500 where exception != nil && text.hasPrefix("Message id be in format"):
            return .permanent(.validationError, "WAHA refused the message id: \(text)")
        case 400, 422: return .permanent(.validationError, "WAHA refused the request (\(status)): \(text)")
        case 401, 403: return .permanent(.engineError, "WAHA refused the API key: \(text)")
        case 404: return .permanent(.notFound, text)
        default:
            let name = (exception?["name"] as? String).map { "\($0): " } ?? ""
            return .transient("WAHA answered \(status): \(name)\(text)")
        }
    }
}
