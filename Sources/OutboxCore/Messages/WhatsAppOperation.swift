import Foundation

/// What a send carries, decoded from the job's payload.
public enum MessageContent: Sendable, Hashable {
    case text(String)
    case poll(name: String, options: [String], multipleAnswers: Bool)
    case location(latitude: Double, longitude: Double, name: String?, address: String?)
    case contacts([Contact])

    public struct Contact: Sendable, Hashable, Codable {
        public var name: String
        public var phone: String?
        public var vcard: String?

        public init(name: String, phone: String? = nil, vcard: String? = nil) {
            self.name = name
            self.phone = phone
            self.vcard = vcard
        }

        /// The vCard to send: the given one, or one built from name and phone.
        public var vcardText: String {
            if let vcard { return vcard }
            let digits = (phone ?? "").filter(\.isNumber)
            return "BEGIN:VCARD\nVERSION:3.0\nFN:\(name)\nTEL;type=CELL;waid=\(digits):+\(digits)\nEND:VCARD"
        }
    }

    public var typeName: String {
        switch self {
        case .text: "text"
        case .poll: "poll"
        case .location: "location"
        case .contacts: "contact"
        }
    }
}

/// One thing to do on WhatsApp: what a job becomes once its payload is decoded.
public enum WhatsAppOperation: Sendable, Equatable {
    /// Send `content` to `chat` with the caller-chosen message id `id`.
    case send(id: String, chat: String, content: MessageContent)
    /// Replace the text of own message `id`.
    case edit(id: String, chat: String, text: String)
    /// Delete message `id` for everyone; `sender` is set for another participant's message.
    case revoke(id: String, chat: String, sender: String?)

    public var chat: String {
        switch self {
        case .send(_, let chat, _), .edit(_, let chat, _), .revoke(_, let chat, _): chat
        }
    }

    /// The same edit or revoke, addressed to the id the engine gave the message (WAHA's
    /// `true_CHAT_KEYID`) instead of ours. Sends are unchanged.
    public func addressing(engineMessageID: String) -> WhatsAppOperation {
        switch self {
        case .send: self
        case .edit(_, let chat, let text): .edit(id: engineMessageID, chat: chat, text: text)
        case .revoke(_, let chat, let sender): .revoke(id: engineMessageID, chat: chat, sender: sender)
        }
    }

    public var messageID: String {
        switch self {
        case .send(let id, _, _), .edit(let id, _, _), .revoke(let id, _, _): id
        }
    }

    public var kind: JobKind {
        switch self {
        case .send: .send
        case .edit: .edit
        case .revoke: .revoke
        }
    }

    /// Decodes a claimed job. A payload that does not decode is a `validation_error`: the job
    /// fails alone and the worker goes on.
    public init(job: ClaimedJob) throws(OutboxError) {
        let payload: Payload
        do {
            payload = try JSONDecoder().decode(Payload.self, from: Data(job.payload.utf8))
        } catch {
            throw OutboxError(.validationError, "payload of job \(job.id) does not decode: \(Self.describe(error))")
        }
        switch job.kind {
        case .send:
            self = .send(id: job.waMessageID, chat: job.chat, content: try payload.content())
        case .edit:
            self = .edit(id: job.waMessageID, chat: job.chat, text: try PayloadRules.text(payload.text, what: "edit job \(job.id)"))
        case .revoke:
            self = .revoke(id: job.waMessageID, chat: job.chat, sender: payload.sender.flatMap { $0.isEmpty ? nil : $0 })
        }
    }

    private static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context),
             DecodingError.keyNotFound(_, let context), DecodingError.dataCorrupted(let context):
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            return path.isEmpty ? context.debugDescription : "\(path): \(context.debugDescription)"
        default:
            return "\(error)"
        }
    }
}

/// The JSON payload of any job kind; see README "Payloads".
struct Payload: Decodable {
    var type: String?
    var chat: String?
    var text: String?
    var name: String?
    var options: [String]?
    var multipleAnswers: Bool?
    var latitude: Double?
    var longitude: Double?
    var address: String?
    var contacts: [MessageContent.Contact]?
    var messageId: String?
    var sender: String?

    func content() throws(OutboxError) -> MessageContent {
        switch type {
        case "text":
            return .text(try PayloadRules.text(text, what: "a text message"))
        case "poll":
            let (name, options) = try PayloadRules.poll(name: name, options: options)
            return .poll(name: name, options: options, multipleAnswers: multipleAnswers ?? false)
        case "location":
            let (latitude, longitude) = try PayloadRules.location(latitude: latitude, longitude: longitude)
            return .location(latitude: latitude, longitude: longitude, name: name, address: address)
        case "contact":
            return .contacts(try PayloadRules.contacts(contacts))
        case "image", "video", "audio", "document", "sticker":
            throw OutboxError(.notImplemented, "\(type!) messages are not implemented yet")
        default:
            throw OutboxError(.validationError, "unknown message type \(type ?? "(none)")")
        }
    }
}
