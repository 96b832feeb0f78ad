@testable import Engines
import Foundation
import NIOHTTP1
import OutboxCore
import OutboxStore
import Receipts
import Testing
import TestSupport

/// The adapters against the engines' published API shapes (`Fixtures/README.md` cites each).
@Suite("Engine adapters against the published APIs")
struct EngineAdapterTests {
    struct RequestFixture {
        var name: String
        var method: String
        var path: String
        var body: Any?
    }

    static func fixture(_ file: String) throws -> Any {
        let url = TestEnvironment.repositoryRoot.appendingPathComponent("Tests/WorkerTests/Fixtures/\(file)")
        return try JSONSerialization.jsonObject(with: try Data(contentsOf: url), options: [.fragmentsAllowed])
    }

    static func requests(_ file: String) throws -> [String: RequestFixture] {
        let list = try #require(try fixture(file) as? [[String: Any]])
        return Dictionary(uniqueKeysWithValues: list.map { item in
            let name = item["name"] as? String ?? ""
            let body = item["body"].flatMap { $0 is NSNull ? nil : $0 }
            return (name, RequestFixture(name: name, method: item["method"] as? String ?? "", path: item["path"] as? String ?? "", body: body))
        })
    }

    /// The adapter's body as plain JSON objects, for comparison with a fixture.
    static func json(_ body: [String: EngineJSON]?) throws -> NSDictionary? {
        guard let body else { return nil }
        return try JSONSerialization.jsonObject(with: JSONEncoder().encode(body)) as? NSDictionary
    }

    @Test func wahaRequestsMatchWahasDocumentedBodies() throws {
        let fixtures = try Self.requests("waha-requests.json")
        let chat = "11111111111@s.whatsapp.net"
        let sent = "true_11111111111@c.us_AAAAAAAAAAAAAAAAAAAA"
        let vcard = "BEGIN:VCARD\nVERSION:3.0\nFN:Jane Doe\nTEL;type=CELL;waid=911111111111:+911111111111\nEND:VCARD"
        let operations: [String: WhatsAppOperation] = [
            "text": .send(id: "3EB0X", chat: chat, content: .text("Hi there!")),
            "poll": .send(id: "3EB0X", chat: chat, content: .poll(name: "How are you?", options: ["Awesome!", "Good!", "Not bad!"], multipleAnswers: false)),
            "location": .send(id: "3EB0X", chat: chat, content: .location(latitude: 38.8937255, longitude: -77.0969763, name: "Our office", address: nil)),
            "contact": .send(id: "3EB0X", chat: chat, content: .contacts([.init(name: "Jane Doe", vcard: vcard)])),
            "edit": .edit(id: sent, chat: chat, text: "Hello, world!"),
            "revoke": .revoke(id: sent, chat: chat, sender: nil),
        ]
        #expect(Set(operations.keys) == Set(fixtures.keys))
        for (name, operation) in operations {
            let expected = try #require(fixtures[name])
            let (method, path, body) = try WahaEngine.request(for: operation, session: "default")
            #expect(method.rawValue == expected.method, "\(name)")
            #expect(path == expected.path, "\(name)")
            #expect(try Self.json(body) == expected.body as? NSDictionary, "\(name)")
        }
    }

    @Test func wuzapiRequestsMatchWuzapisDocumentedBodies() throws {
        let fixtures = try Self.requests("wuzapi-requests.json")
        let id = "3EB06F9067F80BAB89FF"
        let vcard = "BEGIN:VCARD\nVERSION:3.0\nN:Doe;John;;;\nFN:John Doe\nTEL;type=CELL;waid=5491155553935:+5491155553935\nEND:VCARD"
        let operations: [String: WhatsAppOperation] = [
            "text": .send(id: id, chat: "5491155553934@s.whatsapp.net", content: .text("Hello World")),
            "poll": .send(id: id, chat: "120363313346913103@g.us", content: .poll(name: "What's your favorite color?", options: ["Red", "Blue", "Green"], multipleAnswers: false)),
            "location": .send(id: id, chat: "5491155553935@s.whatsapp.net", content: .location(latitude: 48.85837, longitude: 2.294481, name: "Party", address: nil)),
            "contact": .send(id: id, chat: "5491155553935@s.whatsapp.net", content: .contacts([.init(name: "Casa", vcard: vcard)])),
            "edit": .edit(id: id, chat: "5491155553934@s.whatsapp.net", text: "Hello World (edited)"),
            "revoke": .revoke(id: id, chat: "5491155553934@s.whatsapp.net", sender: nil),
        ]
        #expect(Set(operations.keys) == Set(fixtures.keys))
        for (name, operation) in operations {
            let expected = try #require(fixtures[name])
            let (path, body) = try WuzapiEngine.request(for: operation)
            #expect(expected.method == "POST")
            #expect(path == expected.path, "\(name)")
            #expect(try Self.json(body) == expected.body as? NSDictionary, "\(name)")
        }
    }

    @Test func wahaAnswersOfEveryEngineGiveTheMessageID() throws {
        let fixtures = try #require(try Self.fixture("waha-responses.json") as? [String: Any])
        for send in try #require(fixtures["sends"] as? [[String: Any]]) {
            let body = try JSONSerialization.data(withJSONObject: try #require(send["body"]))
            #expect(WahaEngine.messageID(in: body, chat: "11111111111@c.us") == "true_11111111111@c.us_AAAAAAAAAAAAAAAAAAAA",
                    "\(send["engine"] ?? "")")
            #expect(MessageKey.keyID(of: WahaEngine.messageID(in: body, chat: "11111111111@c.us") ?? "") == "AAAAAAAAAAAAAAAAAAAA")
        }
        for (status, expected) in try #require(fixtures["statuses"] as? [String: String]) {
            #expect(WahaEngine.sessionStatus(status).rawValue == expected, "\(status)")
        }
        // Error answers and their classification: `EngineConformanceTests` replays `Fixtures/engines/`.
    }

    @Test func receiptWebhooksAreParsedAndTheirSignaturesChecked() throws {
        let fixtures = try #require(try Self.fixture("waha-responses.json") as? [String: Any])
        let ack = try JSONSerialization.data(withJSONObject: try #require(fixtures["ack"]))
        #expect(ReceiptWebhook.receipts(.waha, body: ack, session: nil) == [ReceiptUpdate(session: "default", keyID: "AAAAAAAAAAAAAAAAAAAA", level: .read)])
        let wuzapi = try JSONSerialization.data(withJSONObject: try Self.fixture("wuzapi-webhook.json"))
        #expect(ReceiptWebhook.receipts(.wuzapi, body: wuzapi, session: "s1") == [ReceiptUpdate(session: "s1", keyID: "3EB06F9067F80BAB89FF", level: .delivered)])
        // wuzapi's default form encoding carries the same JSON in `jsonData`.
        let form = "jsonData=" + String(decoding: wuzapi, as: UTF8.self).addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
        #expect(ReceiptWebhook.receipts(.wuzapi, body: Data(form.utf8), session: "s1").count == 1)
        // Events that are not receipts write nothing.
        #expect(ReceiptWebhook.receipts(.waha, body: Data(#"{"event":"message","session":"default","payload":{"id":"x"}}"#.utf8), session: nil).isEmpty)

        for engine in ReceiptWebhook.Engine.allCases {
            let signature = ReceiptWebhook.signature(engine, body: ack, secret: "s3cret")
            #expect(signature.count == (engine == .waha ? 128 : 64))
            #expect(ReceiptWebhook.verify(engine, body: ack, presented: signature, secret: "s3cret"))
            #expect(ReceiptWebhook.verify(engine, body: ack, presented: signature.uppercased(), secret: "s3cret"))
            #expect(!ReceiptWebhook.verify(engine, body: ack, presented: signature, secret: "other"))
            #expect(!ReceiptWebhook.verify(engine, body: ack + Data(" ".utf8), presented: signature, secret: "s3cret"))
            #expect(!ReceiptWebhook.verify(engine, body: ack, presented: nil, secret: "s3cret"))
            #expect(!ReceiptWebhook.verify(engine, body: ack, presented: signature, secret: ""))
        }
    }
}
