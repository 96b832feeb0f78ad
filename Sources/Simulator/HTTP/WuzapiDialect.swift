import Engines
import Foundation
import Hummingbird
import OutboxCore
import Receipts

/// The simulator over HTTP, speaking wuzapi's API as the version of its `DialectProfile` answers
/// (asternic/wuzapi handlers.go; the wuzapi fixtures cite the commits): the `Token` header names
/// the session, answers are `{code, success, data|error}`, send failures are a 500 with whatsmeow's
/// error after "error sending message: ", a session without a client answers "no session".
///
/// Its receipts go to the webhook as wuzapi sends them: JSON, signed with `x-hmac-signature`
/// (current), or form-encoded in `jsonData` and unsigned (2025-05). Control endpoints:
/// `SimulatorControl`.
public enum WuzapiDialect {
    public static func router(_ simulator: WhatsAppSimulator, webhook: WebhookTarget? = nil,
                              profile: ProfileBox = ProfileBox(.wuzapiCurrent)) -> Router<BasicRequestContext> {
        let router = Router()
        if let webhook {
            simulator.onReceipt { receipt in
                let current = profile.profile.signsWebhooks
                webhook.deliver(receipt, engine: .wuzapi, signed: current) { webhookBody($0, form: !current) }
            }
        }
        router.post("/chat/send/text") { request, context in
            let body = try await request.decode(as: SendText.self, context: context)
            return await respond(simulator, profile, request, .send(id: body.Id ?? newID(), chat: jid(body.Phone), content: .text(body.Body)))
        }
        router.post("/chat/send/poll") { request, context -> Response in
            if profile.profile.wuzapiMissing.contains("/chat/send/poll") { return notRouted() }
            let body = try await request.decode(as: SendPoll.self, context: context)
            return try await respond(simulator, profile, request, .send(id: body.Id ?? newID(), chat: jid(body.Group),
                                                                        content: .poll(name: body.Header, options: body.Options, multipleAnswers: false)))
                .response(from: request, context: context)
        }
        router.post("/chat/send/location") { request, context in
            let body = try await request.decode(as: SendLocation.self, context: context)
            // handlers.go SendLocation: 0 reads as missing.
            if body.Latitude == 0 { return failure(400, "missing Latitude in Payload", profile.profile) }
            if body.Longitude == 0 { return failure(400, "missing Longitude in Payload", profile.profile) }
            return await respond(simulator, profile, request, .send(id: body.Id ?? newID(), chat: jid(body.Phone),
                                                                    content: .location(latitude: body.Latitude, longitude: body.Longitude, name: body.Name, address: nil)))
        }
        router.post("/chat/send/contact") { request, context in
            let body = try await request.decode(as: SendContact.self, context: context)
            return await respond(simulator, profile, request, .send(id: body.Id ?? newID(), chat: jid(body.Phone),
                                                                    content: .contacts([.init(name: body.Name, vcard: body.Vcard)])))
        }
        router.post("/chat/send/edit") { request, context -> Response in
            if profile.profile.wuzapiMissing.contains("/chat/send/edit") { return notRouted() }
            let body = try await request.decode(as: Edit.self, context: context)
            return try await respond(simulator, profile, request, .edit(id: body.Id, chat: jid(body.Phone), text: body.Body))
                .response(from: request, context: context)
        }
        router.post("/chat/delete") { request, context in
            // handlers.go DeleteMessage reads Phone and Id only: every revoke is of an own message.
            let body = try await request.decode(as: Delete.self, context: context)
            return await respond(simulator, profile, request, .revoke(id: body.Id, chat: jid(body.Phone), sender: nil))
        }
        router.get("/session/status") { request, _ in
            let session = request.headers[.init("Token")!] ?? ""
            let status = simulator.status(session: session)
            let connected = status != .disconnected
            let loggedIn = status == .connected || status == .restricted
            let data: [String: JSONValue] = profile.profile == .wuzapi202505
                ? ["Connected": .bool(connected), "LoggedIn": .bool(loggedIn)]
                : ["id": .string("1"), "name": .string(session), "connected": .bool(connected), "loggedIn": .bool(loggedIn),
                   "jid": .string(loggedIn ? "5491155550000:12@s.whatsapp.net" : ""), "webhook": .string(""), "events": .string("ReadReceipt")]
            return Reply(status: .ok, body: ["code": .int(200), "data": .object(data), "success": .bool(true)])
        }
        SimulatorControl.register(on: router, simulator, profile: profile)
        return router
    }

    static func respond(_ simulator: WhatsAppSimulator, _ profile: ProfileBox, _ request: Request, _ operation: WhatsAppOperation) async -> Reply {
        guard let session = request.headers[.init("Token")!], !session.isEmpty else {
            return Reply(status: .unauthorized, body: ["code": .int(401), "error": .string("unauthorized"), "success": .bool(false)])
        }
        let profile = profile.profile
        do {
            let receipt = try await simulator.perform(operation, session: session)
            return sent(operation, id: receipt.messageID, at: receipt.timestamp, profile)
        } catch .ambiguousTimeout {
            // Delivered; the answer arrives after the client has given up.
            try? await Task.sleep(for: simulator.configuration.ambiguousDelay)
            return sent(operation, id: operation.messageID, at: Date(), profile)
        } catch {
            let sending = profile == .wuzapi202505 ? "Error sending message: " : "error sending message: "
            return switch error {
            case .notConnected where simulator.status(session: session) == .connecting:
                failure(500, sending + "the store doesn't contain a device JID", profile)
            case .notConnected: failure(500, profile == .wuzapi202505 ? "No session" : "no session", profile)
            case .restricted: failure(500, sending + "server returned error 463", profile)
            case .rateOverlimit: failure(500, sending + "server returned error 429", profile)
            case .notOnWhatsApp(let number): failure(400, "\(number) is not on WhatsApp", profile)
            case .messageNotFound(let id): failure(500, "message not found: \(id)", profile)
            case .notEditable(let reason): failure(400, reason, profile)
            case .editWindowPassed(let id): failure(500, "error sending edit message: edit window passed for \(id)", profile)
            case .revokeWindowPassed(let id): failure(500, sending + "revoke window passed for \(id)", profile)
            case .unauthorized: Reply(status: .unauthorized, body: ["code": .int(401), "error": .string("unauthorized"), "success": .bool(false)])
            case .transient, .ambiguousTimeout: failure(500, sending + "info query timed out", profile)
            }
        }
    }

    /// A success: `{Details, Id, Timestamp}` (Unix seconds now, RFC 3339 in 2025-05); a poll
    /// answers `{Details: "Poll sent successfully", Id}`, a revoke "Deleted".
    static func sent(_ operation: WhatsAppOperation, id: String, at time: Date, _ profile: DialectProfile) -> Reply {
        var data: [String: JSONValue] = ["Details": .string("Sent"), "Id": .string(id)]
        if case .send(_, _, .poll) = operation {
            data["Details"] = .string("Poll sent successfully")
        } else {
            if case .revoke = operation { data["Details"] = .string("Deleted") }
            data["Timestamp"] = profile == .wuzapi202505 ? .string(ISO8601DateFormatter().string(from: time)) : .int(Int(time.timeIntervalSince1970))
        }
        return Reply(status: .ok, body: ["code": .int(200), "data": .object(data), "success": .bool(true)])
    }

    static func failure(_ code: Int, _ text: String, _ profile: DialectProfile) -> Reply {
        Reply(status: .init(code: code), body: ["code": .int(code), "error": .string(text), "success": .bool(false)])
    }

    /// gorilla/mux's answer for a path the version does not route.
    static func notRouted() -> Response {
        var response = Response(status: .notFound, body: .init(byteBuffer: ByteBuffer(string: "404 page not found\n")))
        response.headers[.contentType] = "text/plain; charset=utf-8"
        return response
    }

    /// A receipt as wuzapi posts it: whatsmeow's `events.Receipt` under `event`, with `type`
    /// ReadReceipt and `state` Delivered or Read; JSON (WEBHOOK_FORMAT=json), or the same JSON in the
    /// form field `jsonData` (`form`, the default of older versions).
    @Sendable static func webhookBody(_ receipt: WhatsAppSimulator.Receipt, form: Bool) -> Data {
        let object: [String: Any] = [
            "type": "ReadReceipt",
            "state": receipt.kind == .read ? "Read" : "Delivered",
            "event": [
                "Chat": receipt.chat, "Sender": receipt.chat, "IsFromMe": false, "IsGroup": receipt.chat.hasSuffix("@g.us"),
                "MessageIDs": [receipt.messageID], "Timestamp": ISO8601DateFormatter().string(from: Date()),
                "Type": receipt.kind == .read ? "read" : "",
            ] as [String: Any],
            "userID": "1",
            "instanceName": receipt.session,
        ]
        let json = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
        guard form else { return json }
        let encoded = String(decoding: json, as: UTF8.self).addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
        return Data("jsonData=\(encoded)&token=\(receipt.session)".utf8)
    }

    static func jid(_ phone: String) -> String {
        phone.contains("@") ? phone : phone + "@s.whatsapp.net"
    }

    static func newID() -> String {
        "3EB0" + String(UInt64.random(in: 0...UInt64.max) & 0xFF_FFFF_FFFF_FFFF_FF, radix: 16, uppercase: true)
    }

    struct SendText: Decodable { var Phone: String; var Body: String; var Id: String? }
    struct SendPoll: Decodable { var Group: String; var Header: String; var Options: [String]; var Id: String? }
    struct SendLocation: Decodable { var Phone: String; var Latitude: Double; var Longitude: Double; var Name: String?; var Id: String? }
    struct SendContact: Decodable { var Phone: String; var Name: String; var Vcard: String; var Id: String? }
    struct Edit: Decodable { var Phone: String; var Id: String; var Body: String }
    struct Delete: Decodable { var Phone: String; var Id: String }
}

/// A JSON answer with a status.
struct Reply: ResponseGenerator {
    var status: HTTPResponse.Status
    /// nil: an empty body.
    var body: [String: JSONValue]?

    func response(from request: Request, context: some RequestContext) throws -> Response {
        guard let body else { return Response(status: status) }
        let data = try JSONEncoder().encode(body)
        var response = Response(status: status, body: .init(byteBuffer: ByteBuffer(bytes: data)))
        response.headers[.contentType] = "application/json"
        return response
    }
}

enum JSONValue: Encodable {
    case string(String), int(Int), bool(Bool), object([String: JSONValue]), array([JSONValue]), null
    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .string(let value): try container.encode(value)
        case .int(let value): try container.encode(value)
        case .bool(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .null: try container.encodeNil()
        }
    }
}
