import Engines
import Foundation
import Hummingbird
import OutboxCore
import Receipts

/// The simulator over HTTP, speaking WAHA's API (`X-Api-Key`; session in the body or the path;
/// users as `NUMBER@c.us`), as the version of its `DialectProfile` answers (`WahaAnswers`).
///
/// As WAHA does, it picks each message's id itself, so a re-send after a lost answer is a second
/// message (the simulator counts it in `deliveredTwice`). A session that is not running answers
/// 404, one that is starting 422 (after `notConnectedDelay`). Edits and revokes take WAHA's
/// serialized ids (`true_<chat>_<id>`, `false_<chat>_<id>[_<participant>]`) and refuse bare ones
/// with a 500. `GET /api/{session}/chats/{chatId}/messages` lists the session's own messages,
/// newest first. Receipts go to the webhook as `message.ack`, or `message.ack.group` for groups.
public enum WahaDialect {
    public static func router(_ simulator: WhatsAppSimulator, apiKey: String?, webhook: WebhookTarget? = nil,
                              profile: ProfileBox = ProfileBox(.wahaPlusGows)) -> Router<BasicRequestContext> {
        let router = Router()
        if let webhook {
            simulator.onReceipt { receipt in
                let signs = profile.profile.signsWebhooks
                webhook.deliver(receipt, engine: .waha, signed: signs) { WahaAnswers.webhookBody($0, engine: profile.profile.wahaEngine) }
            }
        }
        router.post("/api/sendText") { request, context in
            let body = try await request.decode(as: SendText.self, context: context)
            return await send(simulator, apiKey, profile, request, body.session, body.chatId, .text(body.text))
        }
        router.post("/api/sendPoll") { request, context in
            let body = try await request.decode(as: SendPoll.self, context: context)
            return await send(simulator, apiKey, profile, request, body.session, body.chatId,
                              .poll(name: body.poll.name, options: body.poll.options, multipleAnswers: body.poll.multipleAnswers ?? false))
        }
        router.post("/api/sendLocation") { request, context in
            let body = try await request.decode(as: SendLocation.self, context: context)
            return await send(simulator, apiKey, profile, request, body.session, body.chatId,
                              .location(latitude: body.latitude, longitude: body.longitude, name: body.title, address: nil))
        }
        router.post("/api/sendContactVcard") { request, context in
            let body = try await request.decode(as: SendContacts.self, context: context)
            let contacts = body.contacts.map { MessageContent.Contact(name: fullName(in: $0.vcard ?? "") ?? $0.fullName ?? "", vcard: $0.vcard) }
            return await send(simulator, apiKey, profile, request, body.session, body.chatId, .contacts(contacts))
        }
        router.put("/api/:session/chats/:chat/messages/:message") { request, context in
            let body = try await request.decode(as: Edit.self, context: context)
            let (session, chat, id) = try pathIDs(context)
            guard let key = WahaAnswers.parse(id) else { return WahaAnswers.badMessageID(request, profile.profile) }
            return await perform(simulator, apiKey, profile, request, session, .edit(id: key.id, chat: jid(chat), text: body.text)) { _ in
                WahaAnswers.messageAnswer(profile.profile, chatID: chat, key: WuzapiDialect.newID(), content: nil)
            }
        }
        router.delete("/api/:session/chats/:chat/messages/:message") { request, context in
            let (session, chat, id) = try pathIDs(context)
            guard let key = WahaAnswers.parse(id) else { return WahaAnswers.badMessageID(request, profile.profile) }
            let sender = key.fromMe ? nil : (key.participant ?? jid(chat))
            return await perform(simulator, apiKey, profile, request, session, .revoke(id: key.id, chat: jid(chat), sender: sender.map(jid))) { _ in
                WahaAnswers.messageAnswer(profile.profile, chatID: chat, key: WuzapiDialect.newID(), content: nil)
            }
        }
        router.get("/api/sessions/:session") { request, context in
            guard authorized(request, apiKey) else { return unauthorized() }
            let session = context.parameters.get("session") ?? ""
            return WahaAnswers.sessionInfo(session, simulator.status(session: session), profile.profile)
        }
        router.get("/api/server/version") { request, _ in
            guard authorized(request, apiKey) else { return unauthorized() }
            let profile = profile.profile
            return Reply(status: .ok, body: ["version": .string(profile.wahaVersion), "engine": .string(profile.wahaEngine),
                                              "tier": .string(profile.isWahaCore ? "CORE" : "PLUS"), "browser": .null])
        }
        router.get("/api/:session/chats/:chat/messages") { request, context -> Response in
            guard authorized(request, apiKey) else { return try unauthorized().response(from: request, context: context) }
            if profile.profile == .wahaCoreNoweb { return try WahaAnswers.nowebStoreDisabled().response(from: request, context: context) }
            let session = context.parameters.get("session") ?? ""
            let chatID = context.parameters.get("chat") ?? ""
            let limit = request.uri.queryParameters.get("limit").flatMap(Int.init) ?? 100
            let listed = simulator.messages(session: session, chat: jid(chatID), limit: limit).map { message in
                WahaAnswers.listing(message, chatID: chatID)
            }
            let data = try JSONSerialization.data(withJSONObject: listed)
            var response = Response(status: .ok, body: .init(byteBuffer: ByteBuffer(bytes: data)))
            response.headers[.contentType] = "application/json"
            return response
        }
        SimulatorControl.register(on: router, simulator, profile: profile)
        return router
    }

    // MARK: Requests

    static func send(_ simulator: WhatsAppSimulator, _ apiKey: String?, _ profile: ProfileBox, _ request: Request, _ session: String,
                     _ chatID: String, _ content: MessageContent) async -> Reply {
        if profile.profile.wahaMissing.contains(request.uri.path) { return WahaAnswers.methodMissing() }
        // WAHA chooses the id: every request is a new message.
        let key = WuzapiDialect.newID()
        return await perform(simulator, apiKey, profile, request, session, .send(id: key, chat: jid(chatID), content: content)) { receipt in
            WahaAnswers.messageAnswer(profile.profile, chatID: chatID, key: receipt.messageID, content: content)
        }
    }

    static func perform(_ simulator: WhatsAppSimulator, _ apiKey: String?, _ profile: ProfileBox, _ request: Request, _ session: String,
                        _ operation: WhatsAppOperation, answer: (EngineReceipt) -> Reply) async -> Reply {
        guard authorized(request, apiKey) else { return unauthorized() }
        if profile.profile.isWahaCore, session != "default" { return WahaAnswers.onlyDefaultSession() }
        do {
            return answer(try await simulator.perform(operation, session: session))
        } catch .ambiguousTimeout {
            // Delivered; the answer arrives after the client has given up.
            try? await Task.sleep(for: simulator.configuration.ambiguousDelay)
            return answer(EngineReceipt(messageID: operation.messageID, timestamp: Date()))
        } catch {
            return WahaAnswers.failure(error, session: session, status: simulator.status(session: session), request: request,
                                       body: operationBody(operation, session: session), profile: profile.profile)
        }
    }

    /// The request body WAHA's `AllExceptionsFilter` echoes back.
    static func operationBody(_ operation: WhatsAppOperation, session: String) -> JSONValue {
        switch operation {
        case .send(_, let chat, let content):
            var body: [String: JSONValue] = ["session": .string(session), "chatId": .string(WahaEngine.chatID(chat))]
            if case .text(let text) = content { body["text"] = .string(text) }
            return .object(body)
        case .edit(_, _, let text): return .object(["text": .string(text)])
        case .revoke: return .object([:])
        }
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
