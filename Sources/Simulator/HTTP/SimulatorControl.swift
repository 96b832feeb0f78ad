import AsyncHTTPClient
import Crypto
import Engines
import Foundation
import Hummingbird
import NIOCore
import NIOHTTP1

/// Endpoints outside the engines' APIs, for tests and the demo, served by every dialect:
/// `POST /sim/sessions/{id}/status {"status": "connected|connecting|disconnected|restricted|unauthorized"}`
/// (`unauthorized`: the engine refuses the session's token; any other status accepts it again) and
/// `GET /sim/stats`.
public enum SimulatorControl {
    static func register(on router: Router<BasicRequestContext>, _ simulator: WhatsAppSimulator) {
        router.post("/sim/sessions/:id/status") { request, context in
            let body = try await request.decode(as: StatusChange.self, context: context)
            guard let id = context.parameters.get("id") else { throw HTTPError(.badRequest) }
            if body.status == "unauthorized" {
                simulator.setCredentialsValid(false, session: id)
                return Reply(status: .ok, body: ["status": .string(body.status)])
            }
            guard let status = EngineSessionStatus(rawValue: body.status) else {
                return Reply(status: .badRequest, body: ["error": .string("status must be connected, connecting, disconnected, restricted or unauthorized")])
            }
            simulator.setCredentialsValid(true, session: id)
            simulator.setStatus(status, session: id)
            return Reply(status: .ok, body: ["status": .string(status.rawValue)])
        }
        router.get("/sim/stats") { _, _ in
            await simulator.flush()
            let stats = simulator.stats
            return Reply(status: .ok, body: ["delivered": .int(stats.delivered), "suppressedDuplicates": .int(stats.suppressedDuplicates),
                                              "edits": .int(stats.edits), "revokes": .int(stats.revokes), "deliveredTwice": .int(stats.deliveredTwice)])
        }
    }

    struct StatusChange: Decodable { var status: String }
}

/// Where the simulator posts its receipt webhooks, and how.
public struct WebhookTarget: Sendable {
    /// `{session}` in the URL is replaced by the session id (wuzapi's webhook is per user).
    public var url: String
    public var secret: String
    /// Send every webhook twice, and a stale `delivered` after each `read`: what engines' retries
    /// and unordered deliveries do, which the receiver must survive.
    public var chaos: Bool

    public init(url: String, secret: String, chaos: Bool = false) {
        self.url = url
        self.secret = secret
        self.chaos = chaos
    }

    /// Posts `body` signed with HMAC (`algorithm`: sha512 for WAHA, sha256 for wuzapi) in `header`.
    func post(_ body: Data, session: String, header: String, sha512: Bool) async {
        let key = SymmetricKey(data: Data(secret.utf8))
        let mac: [UInt8] = sha512 ? Array(HMAC<SHA512>.authenticationCode(for: body, using: key))
                                  : Array(HMAC<SHA256>.authenticationCode(for: body, using: key))
        var request = HTTPClientRequest(url: url.replacingOccurrences(of: "{session}", with: session))
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: header, value: mac.map { String(format: "%02x", $0) }.joined())
        if sha512 { request.headers.add(name: "X-Webhook-Hmac-Algorithm", value: "sha512") }
        request.body = .bytes(ByteBuffer(bytes: body))
        _ = try? await HTTPClient.shared.execute(request, timeout: .seconds(5))
    }

    /// Sends a receipt's webhook(s) in order, with the chaos described above.
    func deliver(_ receipt: WhatsAppSimulator.Receipt, render: @escaping @Sendable (WhatsAppSimulator.Receipt) -> Data,
                 header: String, sha512: Bool) {
        Task {
            let copies = chaos ? 2 : 1
            for _ in 0..<copies { await post(render(receipt), session: receipt.session, header: header, sha512: sha512) }
            if chaos, receipt.kind == .read {
                var stale = receipt
                stale.kind = .delivered
                await post(render(stale), session: receipt.session, header: header, sha512: sha512)
            }
        }
    }
}
