import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import OutboxCore
import OutboxStore
import PostgresClient
import Receipts
import Simulator
import Testing
import TestSupport

/// Receipts as the engines really send them: WAHA's error ack, and webhooks from engine versions
/// that cannot sign.
@Suite("Receipts from engines as they are", .serialized)
struct ReceiptConformanceTests {
    /// One sent job of session `s`; its engine key id.
    static func sentJob(_ fixture: Fixture, session: String) async throws -> String {
        try await fixture.addSessions([session])
        try await fixture.enqueueTexts(count: 1, sessions: [session], chatsPerSession: 1)
        try await fixture.drain(simulator: try WhatsAppSimulator())
        let rows = try await fixture.database.query("SELECT engine_key_id FROM wa_outbox.jobs WHERE session_id = \(session)")
        return try #require(try rows[0].decode(String?.self, at: 0))
    }

    static func wahaAck(session: String, key: String, ack: Int, name: String, event: String = "message.ack") -> Data {
        Data(#"{"event":"\#(event)","session":"\#(session)","engine":"GOWS","payload":{"id":"true_49151@c.us_\#(key)","from":"49151@c.us","fromMe":true,"ack":\#(ack),"ackName":"\#(name)"}}"#.utf8)
    }

    @Test func anErrorAckAfterSentWritesOneFinalUndeliveredEventAfterTheSentOne() async throws {
        let fixture = try await Fixture.make()
        let key = try await Self.sentJob(fixture, session: "s")
        let error = ReceiptWebhook.receipts(.waha, body: Self.wahaAck(session: "s", key: key, ack: -1, name: "ERROR"), session: nil)
        #expect(error.count == 1, "WAHA's ack -1 (ERROR) must be a receipt")
        try await ReceiptStore.record(error, in: fixture.database)
        try await ReceiptStore.record(error, in: fixture.database)  // repeated by the engine
        // A later receipt does not undo it.
        try await ReceiptStore.record([ReceiptUpdate(session: "s", keyID: key, level: .read)], in: fixture.database)

        let rows = try await fixture.database.query("SELECT status, coalesce(error_code, '') FROM wa_outbox.events WHERE job_id IS NOT NULL ORDER BY id")
        let events = try rows.map { "\(try $0.decode(String.self, at: 0)) \(try $0.decode(String.self, at: 1))".trimmingCharacters(in: .whitespaces) }
        #expect(events == ["queued", "sent", "undelivered delivery_failed"])
        await fixture.close()
    }

    @Test func groupAcksCount() async throws {
        let fixture = try await Fixture.make()
        let key = try await Self.sentJob(fixture, session: "g")
        let receipts = ReceiptWebhook.receipts(.waha, body: Self.wahaAck(session: "g", key: key, ack: 3, name: "READ", event: "message.ack.group"), session: nil)
        try await ReceiptStore.record(receipts, in: fixture.database)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.events WHERE status IN ('delivered', 'read')") == 2)
        await fixture.close()
    }

    /// The documented URL secret of a session's webhook: HMAC-SHA256 (hex) of
    /// `wa-outbox webhook url ENGINE SESSION` under the engine's webhook secret.
    static func urlSecret(_ engine: ReceiptWebhook.Engine, session: String, secret: String) -> String {
        ReceiptWebhook.signature(.wuzapi, body: Data("wa-outbox webhook url \(engine.rawValue) \(session)".utf8), secret: secret)
    }

    @Test func unsignedWebhooksAreAcceptedOnlyThroughTheSessionsSecretURL() async throws {
        let fixture = try await Fixture.make()
        let key1 = try await Self.sentJob(fixture, session: "u1")
        let key2 = try await Self.sentJob(fixture, session: "u2")
        let port = try await EngineTests.freePort()
        let admin = "http://127.0.0.1:\(port)"
        let secrets = ["waha": "waha-s3cret", "wuzapi": "wuzapi-s3cret"]
        let worker = try OutboxProcess(["worker", "--database-url", fixture.url, "--admin-listen", "127.0.0.1:\(port)", "--poll-interval-ms", "100"],
                                       environment: [ReceiptWebhook.Engine.waha.secretVariable: secrets["waha"]!,
                                                     ReceiptWebhook.Engine.wuzapi.secretVariable: secrets["wuzapi"]!])
        func post(_ path: String, _ body: Data) async throws -> UInt {
            var request = HTTPClientRequest(url: admin + path)
            request.method = .POST
            request.body = .bytes(ByteBuffer(bytes: body))
            return try await HTTPClient.shared.execute(request, timeout: .seconds(5)).status.code
        }
        for _ in 0..<200 {
            if (try? await HTTPClient.shared.execute(HTTPClientRequest(url: admin + "/healthz"), timeout: .seconds(1)))?.status == .ok { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        let ack = Self.wahaAck(session: "u1", key: key1, ack: 2, name: "DEVICE")
        let u1 = Self.urlSecret(.waha, session: "u1", secret: secrets["waha"]!)
        #expect(try await post("/webhooks/waha", ack) == 401)
        #expect(try await post("/webhooks/waha/u1/\(String(u1.reversed()))", ack) == 401)
        // One session's URL secret does not write another session's receipts.
        #expect(try await post("/webhooks/waha/u2/\(Self.urlSecret(.waha, session: "u2", secret: secrets["waha"]!))", ack) == 401)
        #expect(try await post("/webhooks/waha/u1/\(u1)", ack) == 200)
        // wuzapi before late 2025: form-encoded and unsigned.
        let receipt = #"{"type":"ReadReceipt","state":"Delivered","event":{"MessageIDs":["\#(key2)"]}}"#
        let form = Data(("jsonData=" + receipt.addingPercentEncoding(withAllowedCharacters: .alphanumerics)! + "&token=t").utf8)
        #expect(try await post("/webhooks/wuzapi/u2", form) == 401)
        #expect(try await post("/webhooks/wuzapi/u2/\(Self.urlSecret(.wuzapi, session: "u2", secret: secrets["wuzapi"]!))", form) == 200)

        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.events WHERE status = 'delivered'") == 2)
        worker.signal(SIGTERM)
        #expect(await worker.exitStatus() == 0)
        await fixture.close()
    }
}
