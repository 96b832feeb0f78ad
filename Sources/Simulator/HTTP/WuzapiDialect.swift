import Engines
import Foundation
import Hummingbird
import OutboxCore

/// The simulator over HTTP, speaking wuzapi's API: the `Token` header names the session, bodies and
/// answers have wuzapi's shapes (`{code, success, data:{Details, Timestamp, Id}}`), and failures come
/// back as wuzapi reports them (mostly a 500 carrying whatsmeow's error text).
///
/// Its receipts go to the webhook as wuzapi sends them (`WuzapiDialect.webhook`). Control
/// endpoints: `SimulatorControl`.
public enum WuzapiDialect {
    public static func router(_ simulator: WhatsAppSimulator, webhook: WebhookTarget? = nil) -> Router<BasicRequestContext> {
        let router = Router()
        if let webhook {
            simulator.onReceipt { receipt in
                webhook.deliver(receipt, render: Self.webhookBody, header: "x-hmac-signature", sha512: false)
            }
        }
        router.post("/chat/send/text") { request, context in
            let body = try await request.decode(as: SendText.self, context: context)
            return await respond(simulator, request, .send(id: body.Id ?? newID(), chat: jid(body.Phone), content: .text(body.Body)))
        }
        router.post("/chat/send/poll") { request, context in
            let body = try await request.decode(as: SendPoll.self, context: context)
            return await respond(simulator, request, .send(id: body.Id ?? newID(), chat: jid(body.Group),
                                                           content: .poll(name: body.Header, options: body.Options, multipleAnswers: false)))
        }
        router.post("/chat/send/location") { request, context in
            let body = try await request.decode(as: SendLocation.self, context: context)
            return await respond(simulator, request, .send(id: body.Id ?? newID(), chat: jid(body.Phone),
                                                           content: .location(latitude: body.Latitude, longitude: body.Longitude, name: body.Name, address: nil)))
        }
        router.post("/chat/send/contact") { request, context in
            let body = try await request.decode(as: SendContact.self, context: context)
            return await respond(simulator, request, .send(id: body.Id ?? newID(), chat: jid(body.Phone),
                                                           content: .contacts([.init(name: body.Name, vcard: body.Vcard)])))
        }
        router.post("/chat/send/edit") { request, context in
            let body = try await request.decode(as: Edit.self, context: context)
            return await respond(simulator, request, .edit(id: body.Id, chat: jid(body.Phone), text: body.Body))
        }
        router.post("/chat/delete") { request, context in
            let body = try await request.decode(as: Delete.self, context: context)
            return await respond(simulator, request, .revoke(id: body.Id, chat: jid(body.Phone), sender: body.Participant))
        }
        router.get("/session/status") { request, _ in
            let session = request.headers[.init("Token")!] ?? ""
            let connected = [.connected, .restricted].contains(simulator.status(session: session))
            return Reply(status: .ok, body: ["code": .int(200), "success": .bool(true),
                                              "data": .object(["Connected": .bool(connected), "LoggedIn": .bool(connected)])])
        }
        SimulatorControl.register(on: router, simulator)
        return router
    }

    static func respond(_ simulator: WhatsAppSimulator, _ request: Request, _ operation: WhatsAppOperation) async -> Reply {
        guard let session = request.headers[.init("Token")!], !session.isEmpty else {
            return Reply(status: .unauthorized, body: ["code": .int(401), "error": .string("unauthorized"), "success": .bool(false)])
        }
        do {
            let receipt = try await simulator.perform(operation, session: session)
            return Reply(status: .ok, body: ["code": .int(200), "success": .bool(true), "data": .object([
                "Details": .string("Sent"), "Id": .string(receipt.messageID), "Timestamp": .int(Int(receipt.timestamp.timeIntervalSince1970)),
            ])])
        } catch .ambiguousTimeout {
            // Delivered; the answer arrives after the client has given up.
            try? await Task.sleep(for: simulator.configuration.ambiguousDelay)
            return Reply(status: .ok, body: ["code": .int(200), "success": .bool(true), "data": .object(["Details": .string("Sent"), "Id": .string(operation.messageID)])])
        } catch {
            let (status, text): (HTTPResponse.Status, String) = switch error {
            case .notConnected: (.internalServerError, "no session")
            case .restricted: (.internalServerError, "error sending message: server returned error 463")
            case .rateOverlimit: (.internalServerError, "error sending message: server returned error 429 (rate-overlimit)")
            case .notOnWhatsApp(let number): (.badRequest, "\(number) is not on WhatsApp")
            case .messageNotFound(let id): (.internalServerError, "message not found: \(id)")
            case .notEditable(let reason): (.badRequest, reason)
            case .editWindowPassed(let id): (.internalServerError, "error sending edit: edit window passed for \(id)")
            case .revokeWindowPassed(let id): (.internalServerError, "error sending revoke: revoke window passed for \(id)")
            case .unauthorized: (.unauthorized, "unauthorized")
            case .transient, .ambiguousTimeout: (.badGateway, "upstream connection reset")
            }
            return Reply(status: status, body: ["code": .int(Int(status.code)), "error": .string(text), "success": .bool(false)])
        }
    }

    /// A receipt as wuzapi posts it (WEBHOOK_FORMAT=json): whatsmeow's `events.Receipt` under
    /// `event`, with `type` ReadReceipt and `state` Delivered or Read.
    @Sendable static func webhookBody(_ receipt: WhatsAppSimulator.Receipt) -> Data {
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
        return (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
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
    struct Delete: Decodable { var Phone: String; var Id: String; var Participant: String? }
}

/// A JSON answer with a status.
struct Reply: ResponseGenerator {
    var status: HTTPResponse.Status
    var body: [String: JSONValue]

    func response(from request: Request, context: some RequestContext) throws -> Response {
        let data = try JSONEncoder().encode(body)
        var response = Response(status: status, body: .init(byteBuffer: ByteBuffer(bytes: data)))
        response.headers[.contentType] = "application/json"
        return response
    }
}

enum JSONValue: Encodable {
    case string(String), int(Int), bool(Bool), object([String: JSONValue])
    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .string(let value): try container.encode(value)
        case .int(let value): try container.encode(value)
        case .bool(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }
}
