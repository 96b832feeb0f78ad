@testable import Engines
import Foundation
import OutboxCore
import TestSupport

/// The conformance fixtures of `Fixtures/engines/`: requests, answers and webhooks of each engine
/// version family, each citing the engine source it was taken from.
struct EngineFixtureFile {
    var file: String
    var engine: String
    var cases: [Case]
    var webhooks: [Webhook]

    struct Case {
        var name: String
        var operation: [String: Any]
        var session: String
        /// Simulator setup (`profile`, `status`), when the simulator replays this case.
        var simulator: [String: Any]?
        /// What the adapter sends (unless `adapterSends` is false: a request another client sent).
        var request: (method: String, path: String, body: Any?)?
        var adapterSends: Bool
        var response: (status: UInt, body: Any?, text: String?)?
        var expect: [String: Any]
    }

    struct Webhook {
        var name: String
        var signed: Bool
        var form: Bool
        var body: Any
        var receipts: [(session: String, keyID: String, level: String)]
    }

    static func all() throws -> [EngineFixtureFile] {
        let directory = TestEnvironment.repositoryRoot.appendingPathComponent("Tests/WorkerTests/Fixtures/engines")
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".json") }.sorted()
        return try files.map { name in
            let data = try Data(contentsOf: directory.appendingPathComponent(name))
            guard let object = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) as? [String: Any] else {
                throw TestEnvironment.Missing(description: "\(name) is not a JSON object")
            }
            return try EngineFixtureFile(file: name, object)
        }
    }

    init(file: String, _ object: [String: Any]) throws {
        self.file = file
        engine = object["engine"] as? String ?? ""
        guard let source = object["source"] as? [String: Any], source["repository"] is String, source["commit"] is String else {
            throw TestEnvironment.Missing(description: "\(file) must cite source.repository and source.commit")
        }
        cases = ((object["cases"] as? [[String: Any]]) ?? []).map { item in
            let request = (item["request"] as? [String: Any]).map {
                (method: $0["method"] as? String ?? "", path: $0["path"] as? String ?? "", body: Self.value($0["body"]))
            }
            let response = (item["response"] as? [String: Any]).map {
                (status: UInt($0["status"] as? Int ?? 0), body: Self.value($0["body"]), text: $0["text"] as? String)
            }
            return Case(name: item["name"] as? String ?? "", operation: item["operation"] as? [String: Any] ?? [:],
                        session: item["session"] as? String ?? "default", simulator: item["simulator"] as? [String: Any],
                        request: request, adapterSends: item["adapterSends"] as? Bool ?? true, response: response,
                        expect: item["expect"] as? [String: Any] ?? [:])
        }
        webhooks = ((object["webhooks"] as? [[String: Any]]) ?? []).map { item in
            let receipts = ((item["receipts"] as? [[String: Any]]) ?? []).map {
                (session: $0["session"] as? String ?? "", keyID: $0["keyID"] as? String ?? "", level: $0["level"] as? String ?? "")
            }
            return Webhook(name: item["name"] as? String ?? "", signed: item["signed"] as? Bool ?? false, form: item["form"] as? Bool ?? false,
                           body: item["body"] ?? NSNull(), receipts: receipts)
        }
    }

    static func value(_ any: Any?) -> Any? { any is NSNull ? nil : any }
}

extension EngineFixtureFile.Case {
    /// The operation the case describes; nil for `status`.
    var whatsAppOperation: WhatsAppOperation? {
        let id = operation["id"] as? String ?? ""
        let chat = operation["chat"] as? String ?? ""
        switch operation["kind"] as? String {
        case "edit":
            return .edit(id: id, chat: chat, text: operation["text"] as? String ?? "")
        case "revoke":
            return .revoke(id: id, chat: chat, sender: operation["sender"] as? String)
        case "send", "reconcile":
            let content: MessageContent
            if let poll = operation["poll"] as? [String: Any] {
                content = .poll(name: poll["name"] as? String ?? "", options: poll["options"] as? [String] ?? [],
                                multipleAnswers: poll["multipleAnswers"] as? Bool ?? false)
            } else if let location = operation["location"] as? [String: Any] {
                content = .location(latitude: (location["latitude"] as? NSNumber)?.doubleValue ?? 0,
                                    longitude: (location["longitude"] as? NSNumber)?.doubleValue ?? 0, name: location["name"] as? String, address: nil)
            } else if let contact = operation["contact"] as? [String: Any] {
                content = .contacts([.init(name: contact["name"] as? String ?? "", vcard: contact["vcard"] as? String)])
            } else {
                content = .text(operation["text"] as? String ?? "")
            }
            return .send(id: id, chat: chat, content: content)
        default:
            return nil
        }
    }

    var kind: String { operation["kind"] as? String ?? "" }
}

/// Compares a JSON answer with a fixture's: the same keys at every level and the same JSON types;
/// the fields an adapter classifies by (or that say what the engine is) must be equal too. Ids,
/// timestamps and stack traces vary from answer to answer.
enum JSONShape {
    static let exact: Set<String> = [
        "statusCode", "message", "error", "code", "success", "status", "expected", "session",
        "exception.message", "exception.name", "exception.details", "request.path", "request.method", "request.body",
        "data.Details", "data.connected", "data.loggedIn", "data.Connected", "data.LoggedIn", "data.Id",
    ]

    static func differences(_ actual: Any?, _ expected: Any?, path: String = "") -> [String] {
        let here = path.isEmpty ? "(root)" : path
        if exact.contains(path) {
            return equal(actual, expected) ? [] : ["\(here): \(describe(actual)) instead of \(describe(expected))"]
        }
        switch (actual, expected) {
        case (let a as [String: Any], let e as [String: Any]):
            var problems: [String] = []
            for key in Set(e.keys).subtracting(a.keys).sorted() { problems.append("\(path.isEmpty ? "" : path + ".")\(key): missing") }
            for key in Set(a.keys).subtracting(e.keys).sorted() { problems.append("\(path.isEmpty ? "" : path + ".")\(key): not in the engine's answer") }
            for key in Set(a.keys).intersection(e.keys).sorted() {
                problems += differences(a[key], e[key], path: path.isEmpty ? key : path + "." + key)
            }
            return problems
        case (let a as [Any], let e as [Any]):
            guard let first = e.first, let other = a.first else { return a.isEmpty == e.isEmpty ? [] : ["\(here): array sizes differ"] }
            return differences(other, first, path: path + "[]")
        default:
            return kind(actual) == kind(expected) ? [] : ["\(here): \(kind(actual)) instead of \(kind(expected))"]
        }
    }

    static func kind(_ value: Any?) -> String {
        switch value {
        case nil, is NSNull: "null"
        case is String: "string"
        case is [String: Any]: "object"
        case is [Any]: "array"
        case is NSNumber, is Bool, is Int, is Double: "number"
        default: "\(type(of: value!))"
        }
    }

    static func equal(_ a: Any?, _ b: Any?) -> Bool {
        switch (a, b) {
        case (nil, nil), (is NSNull, nil), (nil, is NSNull), (is NSNull, is NSNull): true
        case (let x?, let y?): (x as? NSObject)?.isEqual(y) ?? false
        default: false
        }
    }

    static func describe(_ value: Any?) -> String { value.map { "\($0)" } ?? "null" }
}
