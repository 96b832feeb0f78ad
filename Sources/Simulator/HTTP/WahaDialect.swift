import Engines
import Foundation
import Hummingbird
import OutboxCore

/// The simulator over HTTP, speaking WAHA's API (`X-Api-Key`; session in the body or the path;
/// users as `NUMBER@c.us`).
///
/// As WAHA does, it picks each message's id itself, so a re-send after a lost answer is a second
/// message (the simulator counts it in `deliveredTwice`). Its send answers rotate through the
/// shapes WAHA's engines return (WEBJS `id` string, `id` object with `_serialized`, NOWEB/GOWS
/// `key.id`), so the adapter's defensive parsing is exercised. A session that is not WORKING
/// answers 422 after `notConnectedDelay`. `GET /api/{session}/chats/{chatId}/messages` lists the
/// session's own messages, newest first, for reconciliation. Receipts go to the webhook as WAHA's
/// `message.ack` events.
public enum WahaDialect {
    public static func router(_ simulator: WhatsAppSimulator, apiKey: String?, webhook: WebhookTarget? = nil) -> Router<BasicRequestContext> {
        let router = Router()
        if let webhook {
            simulator.onReceipt { receipt in
                webhook.deliver(receipt, render: Self.webhookBody, header: "X-Webhook-Hmac", sha512: true)
            }
        }
        router.post("/api/sendText") { request, context in
            let body = try await request.decode(as: SendText.self, context: context)
            return await send(simulator, apiKey, request, body.session, body.chatId, .text(body.text))
        }
        router.post("/api/sendPoll") { request, context in
            let body = try await request.decode(as: SendPoll.self, context: context)
            return await send(simulator, apiKey, request, body.session, body.chatId,
                              .poll(name: body.poll.name, options: body.poll.options, multipleAnswers: body.poll.multipleAnswers ?? false))
        }
        router.post("/api/sendLocation") { request, context in
            let body = try await request.decode(as: SendLocation.self, context: context)
            return await send(simulator, apiKey, request, body.session, body.chatId,
                              .location(latitude: body.latitude, longitude: body.longitude, name: body.title, address: nil))
        }
        router.post("/api/sendContactVcard") { request, context in
            let body = try await request.decode(as: SendContacts.self, context: context)
            let contacts = body.contacts.map { MessageContent.Contact(name: fullName(in: $0.vcard ?? "") ?? $0.fullName ?? "", vcard: $0.vcard) }
            return await send(simulator, apiKey, request, body.session, body.chatId, .contacts(contacts))
        }
        router.put("/api/:session/chats/:chat/messages/:message") { request, context in
            let body = try await request.decode(as: Edit.self, context: context)
            let (session, chat, id) = try pathIDs(context)
            return await perform(simulator, apiKey, request, session, .edit(id: MessageKey.keyID(of: id), chat: jid(chat), text: body.text)) { _ in
                Reply(status: .ok, body: ["id": .string(id)])
            }
        }
        router.delete("/api/:session/chats/:chat/messages/:message") { request, context in
            let (session, chat, id) = try pathIDs(context)
            return await perform(simulator, apiKey, request, session, .revoke(id: MessageKey.keyID(of: id), chat: jid(chat), sender: nil)) { _ in
                Reply(status: .ok, body: [:])
            }
        }
        router.get("/api/sessions/:session") { request, context in
            guard authorized(request, apiKey) else { return unauthorized() }
            let session = context.parameters.get("session") ?? ""
            let status: String = switch simulator.status(session: session) {
            case .connected, .restricted: "WORKING"
            case .connecting: "STARTING"
            case .disconnected: "STOPPED"
            }
            return Reply(status: .ok, body: ["name": .string(session), "status": .string(status)])
        }
        router.get("/api/:session/chats/:chat/messages") { request, context -> Response in
            guard authorized(request, apiKey) else { return try unauthorized().response(from: request, context: context) }
            let session = context.parameters.get("session") ?? ""
            let chatID = context.parameters.get("chat") ?? ""
            let limit = request.uri.queryParameters.get("limit").flatMap(Int.init) ?? 100
            let listed = simulator.messages(session: session, chat: jid(chatID), limit: limit).map { message in
                listing(message, chatID: chatID)
            }
            let data = try JSONSerialization.data(withJSONObject: listed)
            var response = Response(status: .ok, body: .init(byteBuffer: ByteBuffer(bytes: data)))
            response.headers[.contentType] = "application/json"
            return response
        }
        SimulatorControl.register(on: router, simulator)
        return router
    }

    // MARK: Requests

    static func send(_ simulator: WhatsAppSimulator, _ apiKey: String?, _ request: Request, _ session: String, _ chatID: String,
                     _ content: MessageContent) async -> Reply {
        // WAHA chooses the id: every request is a new message.
        let key = WuzapiDialect.newID()
        return await perform(simulator, apiKey, request, session, .send(id: key, chat: jid(chatID), content: content)) { receipt in
            sendAnswer(key: receipt.messageID, chatID: chatID, timestamp: receipt.timestamp)
        }
    }

    static func perform(_ simulator: WhatsAppSimulator, _ apiKey: String?, _ request: Request, _ session: String,
                        _ operation: WhatsAppOperation, answer: (EngineReceipt) -> Reply) async -> Reply {
        guard authorized(request, apiKey) else { return unauthorized() }
        do {
            return answer(try await simulator.perform(operation, session: session))
        } catch .ambiguousTimeout {
            // Delivered; the answer arrives after the client has given up.
            try? await Task.sleep(for: simulator.configuration.ambiguousDelay)
            return answer(EngineReceipt(messageID: operation.messageID, timestamp: Date()))
        } catch {
            let (status, text): (HTTPResponse.Status, String) = switch error {
            case .notConnected: (.unprocessableContent, "Session status is not as expected. Try again later or restart the session")
            case .restricted: (.internalServerError, "Error: server returned error 463 (account restricted)")
            case .rateOverlimit: (.internalServerError, "Error: rate-overlimit (429)")
            case .notOnWhatsApp(let number): (.badRequest, "The number \(number) does not exist on WhatsApp")
            case .messageNotFound(let id): (.notFound, "Message \(id) not found")
            case .notEditable(let reason): (.badRequest, reason)
            case .editWindowPassed(let id): (.internalServerError, "edit window passed for \(id)")
            case .revokeWindowPassed(let id): (.internalServerError, "revoke window passed for \(id)")
            case .unauthorized: (.unauthorized, "Unauthorized")
            case .transient, .ambiguousTimeout: (.badGateway, "upstream connection reset")
            }
            return Reply(status: status, body: ["statusCode": .int(Int(status.code)), "message": .string(text), "error": .string(status.reasonPhrase)])
        }
    }

    /// A send's answer, in one of the shapes WAHA's engines return, chosen by the id.
    static func sendAnswer(key: String, chatID: String, timestamp: Date) -> Reply {
        let serialized = "true_\(chatID)_\(key)"
        let seconds = Int(timestamp.timeIntervalSince1970)
        switch key.utf8.reduce(0, { $0 &+ Int($1) }) % 3 {
        case 0:  // WEBJS
            return Reply(status: .created, body: ["id": .string(serialized), "timestamp": .int(seconds), "fromMe": .bool(true), "to": .string(chatID)])
        case 1:  // WEBJS with the id object
            return Reply(status: .created, body: ["_data": .object(["id": .object([
                "fromMe": .bool(true), "remote": .string(chatID), "id": .string(key), "_serialized": .string(serialized),
            ])]), "timestamp": .int(seconds)])
        default:  // NOWEB, GOWS
            return Reply(status: .created, body: ["key": .object(["remoteJid": .string(chatID), "fromMe": .bool(true), "id": .string(key)]),
                                                  "status": .string("PENDING"), "messageTimestamp": .int(seconds)])
        }
    }

    /// One listed message, as WAHA's chat history shows it.
    static func listing(_ message: WhatsAppSimulator.ListedMessage, chatID: String) -> [String: Any] {
        var object: [String: Any] = [
            "id": "true_\(chatID)_\(message.id)", "timestamp": Int(message.sentAt.timeIntervalSince1970),
            "from": "me@c.us", "fromMe": true, "to": chatID, "hasMedia": false, "ack": 1,
        ]
        switch message.content {
        case .text(let text): object["body"] = text
        case .poll(let name, let options, _): object["body"] = name; object["poll"] = ["name": name, "options": options]
        case .location(let latitude, let longitude, let name, _):
            object["body"] = ""
            object["location"] = ["latitude": latitude, "longitude": longitude, "description": name ?? ""]
        case .contacts(let contacts): object["body"] = ""; object["vCards"] = contacts.map(\.vcardText)
        }
        return object
    }

    /// A receipt as WAHA posts it: a `message.ack` event, ack 2 (DEVICE) or 3 (READ).
    @Sendable static func webhookBody(_ receipt: WhatsAppSimulator.Receipt) -> Data {
        let chatID = WahaEngine.chatID(receipt.chat)
        let object: [String: Any] = [
            "id": "evt_\(UUID().uuidString.lowercased())",
            "timestamp": Int(Date().timeIntervalSince1970 * 1000),
            "event": "message.ack",
            "session": receipt.session,
            "engine": "WEBJS",
            "payload": [
                "id": "true_\(chatID)_\(receipt.messageID)", "from": chatID, "to": chatID, "fromMe": true,
                "ack": receipt.kind == .read ? 3 : 2, "ackName": receipt.kind == .read ? "READ" : "DEVICE",
            ] as [String: Any],
        ]
        return (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
    }

    // MARK: Helpers

    static func authorized(_ request: Request, _ apiKey: String?) -> Bool {
        guard let apiKey else { return true }
        return request.headers[.init("X-Api-Key")!] == apiKey
    }

    static func unauthorized() -> Reply {
        Reply(status: .unauthorized, body: ["statusCode": .int(401), "message": .string("Unauthorized")])
    }

    static func pathIDs(_ context: BasicRequestContext) throws -> (String, String, String) {
        guard let session = context.parameters.get("session"), let chat = context.parameters.get("chat"),
              let message = context.parameters.get("message") else { throw HTTPError(.badRequest) }
        return (session, chat.removingPercentEncoding ?? chat, message.removingPercentEncoding ?? message)
    }

    /// `NUMBER@c.us` to `NUMBER@s.whatsapp.net`; other JIDs unchanged.
    static func jid(_ chatID: String) -> String {
        chatID.hasSuffix("@c.us") ? String(chatID.dropLast("@c.us".count)) + "@s.whatsapp.net" : chatID
    }

    static func fullName(in vcard: String) -> String? {
        vcard.split(separator: "\n").first { $0.hasPrefix("FN:") }.map { String($0.dropFirst(3)).trimmingCharacters(in: .whitespaces) }
    }

    struct SendText: Decodable { var session: String; var chatId: String; var text: String }
    struct SendPoll: Decodable {
        struct Poll: Decodable { var name: String; var options: [String]; var multipleAnswers: Bool? }
        var session: String; var chatId: String; var poll: Poll
    }
    struct SendLocation: Decodable { var session: String; var chatId: String; var latitude: Double; var longitude: Double; var title: String? }
    struct SendContacts: Decodable {
        struct Contact: Decodable { var vcard: String?; var fullName: String? }
        var session: String; var chatId: String; var contacts: [Contact]
    }
    struct Edit: Decodable { var text: String }
}
