import Crypto
import Foundation
import OutboxCore
import OutboxStore

/// The engines' receipt webhooks: who signs them, and what they say.
///
/// - WAHA posts `{"event": "message.ack" | "message.ack.group", "session", "payload": {"id", "ack",
///   "ackName"}}` (newer versions send a group's receipts as `message.ack.group`) and signs the raw
///   body with HMAC-SHA512 in `X-Webhook-Hmac` (hex) when a webhook HMAC key is set; WAHA Core
///   before its HMAC support does not sign. `ack` 2 (DEVICE) is delivered, 3 (READ) and 4 (PLAYED)
///   are read, -1 (ERROR) is undelivered.
/// - wuzapi posts `{"type": "ReadReceipt", "state": "Delivered" | "Read", "event": {"MessageIDs"}}`
///   (as JSON, or form-encoded in a `jsonData` field) and, since late 2025 and only with a user HMAC
///   key, signs the raw body with HMAC-SHA256 in `x-hmac-signature` (hex). Its webhook is set per
///   user, so the URL names our session.
/// - An engine that cannot sign posts to a URL that carries the session's own secret
///   (`urlSecret`), so one leaked URL writes receipts for that session only.
public enum ReceiptWebhook {
    public enum Engine: String, Sendable, CaseIterable {
        case waha, wuzapi

        /// The header carrying the signature.
        public var signatureHeader: String {
            switch self {
            case .waha: "X-Webhook-Hmac"
            case .wuzapi: "x-hmac-signature"
            }
        }

        /// The environment variable holding this engine's webhook secret.
        public var secretVariable: String { "WA_OUTBOX_\(rawValue.uppercased())_WEBHOOK_SECRET" }
    }

    /// The signature an engine puts on `body` with `secret` (lowercase hex).
    public static func signature(_ engine: Engine, body: some DataProtocol, secret: String) -> String {
        let key = SymmetricKey(data: Data(secret.utf8))
        let bytes: [UInt8] = switch engine {
        case .waha: Array(HMAC<SHA512>.authenticationCode(for: body, using: key))
        case .wuzapi: Array(HMAC<SHA256>.authenticationCode(for: body, using: key))
        }
        return bytes.map { String(format: "%02x", $0) }.joined()
    }

    /// Whether `presented` is the right signature, compared in constant time.
    public static func verify(_ engine: Engine, body: Data, presented: String?, secret: String) -> Bool {
        guard let presented, !secret.isEmpty else { return false }
        return ConstantTime.equals(Array(signature(engine, body: body, secret: secret).utf8), Array(presented.lowercased().utf8))
    }

    /// The secret in the URL of an unsigned webhook for `session`: HMAC-SHA256 (lowercase hex) of
    /// `wa-outbox webhook url ENGINE SESSION` under the engine's webhook secret. Nothing to store:
    /// the worker derives it again for each request (README, "Receipts", shows how to compute it).
    public static func urlSecret(_ engine: Engine, session: String, secret: String) -> String {
        signature(.wuzapi, body: Data("wa-outbox webhook url \(engine.rawValue) \(session)".utf8), secret: secret)
    }

    /// Whether `presented` is the URL secret of `session`, compared in constant time.
    public static func verifyURLSecret(_ engine: Engine, session: String, presented: String, secret: String) -> Bool {
        guard !secret.isEmpty else { return false }
        return ConstantTime.equals(Array(urlSecret(engine, session: session, secret: secret).utf8), Array(presented.lowercased().utf8))
    }

    /// The receipts in a webhook body; other events give none. `session` is the URL's (wuzapi).
    public static func receipts(_ engine: Engine, body: Data, session: String?) -> [ReceiptUpdate] {
        switch engine {
        case .waha:
            guard let object = try? JSONSerialization.jsonObject(with: body) as? [String: Any],
                  ["message.ack", "message.ack.group"].contains(object["event"] as? String),
                  let session = (object["session"] as? String) ?? session,
                  let payload = object["payload"] as? [String: Any],
                  let id = (payload["id"] as? String) ?? ((payload["id"] as? [String: Any])?["_serialized"] as? String),
                  let ack = (payload["ack"] as? Int) ?? ackLevel(payload["ackName"] as? String) else { return [] }
            let level: ReceiptUpdate.Level
            switch ack {
            case -1: level = .undelivered
            case 2: level = .delivered
            case 3, 4: level = .read
            default: return []
            }
            return [ReceiptUpdate(session: session, keyID: MessageKey.keyID(of: id), level: level)]
        case .wuzapi:
            guard let session, let object = wuzapiObject(body), object["type"] as? String == "ReadReceipt",
                  let event = object["event"] as? [String: Any], let ids = event["MessageIDs"] as? [String] else { return [] }
            let level: ReceiptUpdate.Level
            switch (object["state"] as? String)?.lowercased() {
            case "delivered": level = .delivered
            case "read": level = .read
            default: return []
            }
            return ids.map { ReceiptUpdate(session: session, keyID: $0, level: level) }
        }
    }

    private static func ackLevel(_ name: String?) -> Int? {
        switch name?.uppercased() {
        case "ERROR": -1
        case "DEVICE": 2
        case "READ": 3
        case "PLAYED": 4
        default: nil
        }
    }

    /// wuzapi's body: JSON, or a form whose `jsonData` field holds the JSON.
    private static func wuzapiObject(_ body: Data) -> [String: Any]? {
        if let object = try? JSONSerialization.jsonObject(with: body) as? [String: Any] { return object }
        guard let form = String(data: body, encoding: .utf8) else { return nil }
        for pair in form.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, parts[0] == "jsonData" else { continue }
            let value = parts[1].replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? ""
            return try? JSONSerialization.jsonObject(with: Data(value.utf8)) as? [String: Any]
        }
        return nil
    }
}
