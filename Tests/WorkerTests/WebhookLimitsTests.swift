import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import OutboxCore
import Receipts
import Testing
import TestSupport

/// The receipt webhooks bound what they read (1 MiB: 413 in the error envelope, nothing written)
/// and check signatures in constant time (`ConstantTime.equals` on digests, whatever the length
/// or the first differing byte of what was presented): a signature off by one digit, cut short,
/// grown long or in another case of hex is refused or accepted exactly as it should be.
@Suite("Receipt webhooks: body size and signatures")
struct WebhookLimitsTests {
    @Test func anOversizedBodyIs413AndABadSignature401AndNeitherWrites() async throws {
        let fixture = try await Fixture.make()
        let key = try await ReceiptConformanceTests.sentJob(fixture, session: "w1")
        let port = try await TestEnvironment.freePort()
        let admin = "http://127.0.0.1:\(port)"
        let secret = "wuzapi-webhook-secret"
        let worker = try OutboxProcess(["worker", "--database-url", fixture.url, "--admin-listen", "127.0.0.1:\(port)", "--poll-interval-ms", "100"],
                                       environment: [ReceiptWebhook.Engine.wuzapi.secretVariable: secret])
        func post(_ body: Data, signature: String?, path: String = "/webhooks/wuzapi/w1") async throws -> (UInt, String) {
            var request = HTTPClientRequest(url: admin + path)
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            if let signature { request.headers.add(name: ReceiptWebhook.Engine.wuzapi.signatureHeader, value: signature) }
            request.body = .bytes(ByteBuffer(bytes: body))
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
            return (response.status.code, String(buffer: try await response.body.collect(upTo: 1 << 20)))
        }
        for _ in 0..<600 {
            if (try? await HTTPClient.shared.execute(HTTPClientRequest(url: admin + "/healthz"), timeout: .seconds(1)))?.status == .ok { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        let receipt = Data(#"{"type":"ReadReceipt","state":"Delivered","event":{"MessageIDs":["\#(key)"]}}"#.utf8)
        let signature = ReceiptWebhook.signature(.wuzapi, body: receipt, secret: secret)

        // Over 1 MiB, even correctly signed: refused before anything is parsed.
        let huge = receipt + Data(repeating: UInt8(ascii: " "), count: (1 << 20) + 1)
        let tooLarge = try await post(huge, signature: ReceiptWebhook.signature(.wuzapi, body: huge, secret: secret))
        #expect(tooLarge.0 == 413, "\(tooLarge)")
        let envelope = try JSONSerialization.jsonObject(with: Data(tooLarge.1.utf8)) as? [String: [String: Any]]
        #expect(envelope?["error"]?["code"] as? String == "payload_too_large")
        let tooLargeForTheURL = try await post(huge, signature: nil, path: "/webhooks/wuzapi/w1/\(String(repeating: "0", count: 64))")
        #expect(tooLargeForTheURL.0 == 413)

        // Wrong signatures: one digit off (first or last), short, long, empty, not hex, another body's.
        var wrong = [signature, signature].enumerated().map { index, text in
            var characters = Array(text)
            let at = index == 0 ? 0 : characters.count - 1
            characters[at] = characters[at] == "0" ? "1" : "0"
            return String(characters)
        }
        wrong += [String(signature.dropLast(2)), signature + "00", "", "zz" + signature.dropFirst(2),
                  ReceiptWebhook.signature(.wuzapi, body: Data("{}".utf8), secret: secret),
                  ReceiptWebhook.signature(.wuzapi, body: receipt, secret: secret + "x")]
        for presented in wrong {
            let refused = try await post(receipt, signature: presented)
            #expect(refused.0 == 401, "signature \(presented)")
        }
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.events WHERE status = 'delivered'") == 0, "no refused webhook wrote")

        // The right one, in either case of hex: accepted once.
        #expect(try await post(receipt, signature: signature.uppercased()).0 == 200)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.events WHERE status = 'delivered'") == 1)
        worker.signal(SIGTERM)
        #expect(await worker.exitStatus() == 0)
        await fixture.close()
    }

    @Test func signatureChecksCompareDigestsSoLengthAndPrefixTellNothing() {
        let body = Data("{}".utf8)
        let good = ReceiptWebhook.signature(.waha, body: body, secret: "s")
        #expect(ReceiptWebhook.verify(.waha, body: body, presented: good, secret: "s"))
        #expect(!ReceiptWebhook.verify(.waha, body: body, presented: String(good.prefix(10)), secret: "s"))
        #expect(!ReceiptWebhook.verify(.waha, body: body, presented: nil, secret: "s"))
        // The comparison itself: equal only for equal bytes, any lengths accepted without a shortcut.
        #expect(ConstantTime.equals(Array(good.utf8), Array(good.utf8)))
        #expect(!ConstantTime.equals(Array(good.utf8), Array(good.utf8.dropLast())))
        #expect(!ConstantTime.equals([], Array(good.utf8)))
    }
}
