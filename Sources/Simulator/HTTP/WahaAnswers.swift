import Engines
import Foundation
import Hummingbird
import OutboxCore

/// WAHA's answers, as the fixtures of `Tests/WorkerTests/Fixtures/engines/waha-*.json` record them
/// from WAHA's sources (devlikeapro/waha; each fixture names file and commit). NestJS renders an
/// `HttpException(string)` as `{statusCode, message, error}` and one built from an object as that
/// object; anything else goes through `AllExceptionsFilter`: a 500 that echoes the request.
enum WahaAnswers {
    // MARK: Errors

    /// `src/core/manager.core.ts` getSession: the session is not running.
    static func notRunning(_ session: String) -> Reply {
        http(.notFound, "We didn't find a session with name '\(session)'.\nPlease start it first by using POST /api/sessions/\(session)/start request")
    }

    /// `src/core/abc/manager.abc.ts` waitUntilStatus: the session exists but is not WORKING.
    static func notWorking(_ session: String) -> Reply {
        Reply(status: .unprocessableContent, body: [
            "error": .string("Session status is not as expected. Try again later or restart the session"),
            "session": .string(session), "status": .string("STARTING"), "expected": .array([.string("WORKING")]),
        ])
    }

    /// `src/core/exceptions.ts` NotImplementedByEngineError.
    static func methodMissing() -> Reply { http(.unprocessableContent, "The method is not implemented by the engine.") }

    /// `src/core/manager.core.ts` OnlyDefaultSessionIsAllowed.
    static func onlyDefaultSession() -> Reply {
        http(.unprocessableContent, "WAHA Core support only 'default' session. If you want to run more then one WhatsApp account - please get WAHA PLUS version. Check this out: https://waha.devlike.pro/")
    }

    /// `src/core/engines/noweb/store/NowebInMemoryStore.ts`: NOWEB lists no chat without its store.
    static func nowebStoreDisabled() -> Reply {
        http(.badRequest, "Enable NOWEB store \"config.noweb.store.enabled=True\" and \"config.noweb.store.full_sync=True\" when starting a new session. Read more: https://waha.devlike.pro/docs/engines/noweb#store")
    }

    /// `src/core/utils/ids.ts` parseMessageIdSerialized refusing a bare id: a plain Error, so a 500.
    static func badMessageID(_ request: Request, _ profile: DialectProfile) -> Reply {
        let format = profile.isWahaCore ? "false_11111111111@c.us_AAAAAAAAAAAAAAAAAAAA" : "false_11111111111@c.us_AAAAAAAAAAAAAAAAAAAA[_participant]"
        return unexpected(["message": .string("Message id be in format \(format)"), "name": .string("Error")],
                          request: request, body: .object([:]), profile: profile)
    }

    /// How a simulated failure reaches the client.
    static func failure(_ error: SimulatorError, session: String, status: EngineSessionStatus, request: Request, body: JSONValue,
                        profile: DialectProfile) -> Reply {
        switch error {
        case .notConnected: status == .connecting ? notWorking(session) : notRunning(session)
        // whatsmeow's ErrServerReturnedError through GOWS's gRPC (see the waha-current fixture's notes).
        case .restricted: unexpected(grpcError("server returned error 463"), request: request, body: body, profile: profile)
        case .rateOverlimit: unexpected(grpcError("server returned error 429"), request: request, body: body, profile: profile)
        case .transient, .ambiguousTimeout:
            unexpected(["message": .string("read ECONNRESET"), "name": .string("Error")], request: request, body: body, profile: profile)
        case .notOnWhatsApp(let number): http(.badRequest, "The number \(number) does not exist on WhatsApp")
        case .messageNotFound(let id): http(.notFound, "Message \(id) not found")
        case .notEditable(let reason): http(.badRequest, reason)
        case .editWindowPassed(let id): http(.badRequest, "edit window passed for \(id)")
        case .revokeWindowPassed(let id): http(.badRequest, "revoke window passed for \(id)")
        case .unauthorized: WahaDialect.unauthorized()
        }
    }

    static func grpcError(_ details: String) -> [String: JSONValue] {
        ["code": .int(2), "details": .string(details), "metadata": .object([:]), "message": .string("2 UNKNOWN: \(details)"), "name": .string("Error")]
    }

    /// `src/nestjs/AllExceptionsFilter.ts`: anything that is not an HttpException.
    static func unexpected(_ exception: [String: JSONValue], request: Request, body: JSONValue, profile: DialectProfile) -> Reply {
        var exception = exception
        exception["stack"] = .string("Error: \(exception["message"].flatMap { if case .string(let s) = $0 { s } else { nil } } ?? "")\n    at <simulator>")
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return Reply(status: .internalServerError, body: [
            "statusCode": .int(500), "timestamp": .string(formatter.string(from: Date())), "exception": .object(exception),
            "request": .object(["path": .string(request.uri.string), "method": .string(request.method.rawValue), "body": body, "query": .object([:])]),
            "version": .object(["version": .string(profile.wahaVersion), "engine": .string(profile.wahaEngine),
                                "tier": .string(profile.isWahaCore ? "CORE" : "PLUS"), "browser": .null]),
        ])
    }

    static func http(_ status: HTTPResponse.Status, _ message: String) -> Reply {
        // NestJS names 422 by RFC 4918, not RFC 9110.
        let reason = status == .unprocessableContent ? "Unprocessable Entity" : status.reasonPhrase
        return Reply(status: status, body: ["statusCode": .int(Int(status.code)), "message": .string(message), "error": .string(reason)])
    }

    // MARK: Answers

    /// A send's (or edit's, revoke's: `content` nil) answer, in the shape of the profile's engine:
    /// GOWS `{id, _data}` (`messageResponse`), NOWEB the Baileys message (nothing for a contact),
    /// WEBJS whatsapp-web.js's message with its `id` object.
    static func messageAnswer(_ profile: DialectProfile, chatID: String, key: String, content: MessageContent?) -> Reply {
        let serialized = "true_\(chatID)_\(key)" + (chatID.hasSuffix("@g.us") ? "_22222222222@c.us" : "")
        let seconds = Int(Date().timeIntervalSince1970)
        switch profile.wahaEngine {
        case "NOWEB":
            if case .contacts = content { return Reply(status: .created, body: nil) }
            var message: [String: JSONValue] = [:]
            if case .text(let text) = content { message["extendedTextMessage"] = .object(["text": .string(text)]) }
            return Reply(status: content == nil ? .ok : .created, body: [
                "key": .object(["remoteJid": .string(WahaDialect.jid(chatID)), "fromMe": .bool(true), "id": .string(key)]),
                "message": .object(message), "messageTimestamp": .string(String(seconds)), "status": .string("PENDING"),
            ])
        case "WEBJS":
            return Reply(status: content == nil ? .ok : .created, body: [
                "id": .object(["fromMe": .bool(true), "remote": .string(chatID), "id": .string(key), "_serialized": .string(serialized)]),
                "timestamp": .int(seconds), "fromMe": .bool(true), "to": .string(chatID),
            ])
        default:
            let data: JSONValue = content == nil ? .null : .object(["Info": .object(["ID": .string(key), "IsFromMe": .bool(true)])])
            return Reply(status: content == nil ? .ok : .created, body: ["id": .string(serialized), "_data": data])
        }
    }

    /// `GET /api/sessions/{session}`.
    static func sessionInfo(_ session: String, _ status: EngineSessionStatus, _ profile: DialectProfile) -> Reply {
        let name: String = switch status {
        case .connected, .restricted: "WORKING"
        case .connecting: "STARTING"
        case .disconnected: "STOPPED"
        }
        let me: JSONValue = name == "WORKING" ? .object(["id": .string("22222222222@c.us"), "pushName": .string("Outbox")]) : .null
        return Reply(status: .ok, body: ["name": .string(session), "status": .string(name), "config": .null, "me": me,
                                          "engine": .object(["engine": .string(profile.wahaEngine)])])
    }

    /// A WAHA message id: `true_<chat>_<id>` or `false_<chat>_<id>[_<participant>]`; nil for a bare id.
    static func parse(_ id: String) -> (fromMe: Bool, id: String, participant: String?)? {
        let parts = id.split(separator: "_", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 3 || parts.count == 4, parts[0] == "true" || parts[0] == "false" else { return nil }
        return (parts[0] == "true", parts[2], parts.count == 4 ? parts[3] : nil)
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

    /// A receipt as WAHA posts it: `message.ack` (`message.ack.group` for a group), ack 2 (DEVICE)
    /// or 3 (READ).
    @Sendable static func webhookBody(_ receipt: WhatsAppSimulator.Receipt, engine: String) -> Data {
        let chatID = WahaEngine.chatID(receipt.chat)
        let group = chatID.hasSuffix("@g.us")
        let object: [String: Any] = [
            "id": "evt_\(UUID().uuidString.lowercased())",
            "timestamp": Int(Date().timeIntervalSince1970 * 1000),
            "event": group ? "message.ack.group" : "message.ack",
            "session": receipt.session,
            "engine": engine,
            "payload": [
                "id": "true_\(chatID)_\(receipt.messageID)" + (group ? "_22222222222@c.us" : ""), "from": chatID, "to": chatID,
                "participant": group ? "33333333333@c.us" : NSNull(), "fromMe": true,
                "ack": receipt.kind == .read ? 3 : 2, "ackName": receipt.kind == .read ? "READ" : "DEVICE",
            ] as [String: Any],
        ]
        return (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
    }
}
