import AsyncHTTPClient
import Engines
import Foundation
import Hummingbird
import NIOCore
import NIOHTTP1
import Receipts

/// Endpoints outside the engines' APIs, for tests and the demo, served by every dialect:
/// `POST /sim/sessions/{id}/status {"status": "connected|connecting|disconnected|restricted|unauthorized"}`
/// (`unauthorized`: the engine refuses the session's token; any other status accepts it again),
/// `POST /sim/profile {"profile": NAME}` (the engine version to answer as, `DialectProfile`) and
/// `GET /sim/stats`.
public enum SimulatorControl {
    static func register(on router: Router<BasicRequestContext>, _ simulator: WhatsAppSimulator, profile: ProfileBox) {
        router.post("/sim/profile") { request, context in
            let body = try await request.decode(as: ProfileChange.self, context: context)
            guard let chosen = DialectProfile(rawValue: body.profile) else {
                return Reply(status: .badRequest, body: ["error": .string("profile must be one of " + DialectProfile.allCases.map(\.rawValue).joined(separator: ", "))])
            }
            profile.profile = chosen
            return Reply(status: .ok, body: ["profile": .string(chosen.rawValue)])
        }
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
    struct ProfileChange: Decodable { var profile: String }
}

/// Where the simulator posts its receipt webhooks, and how.
public struct WebhookTarget: Sendable {
    /// `{session}` in the URL is replaced by the session id (wuzapi's webhook is per user), and
    /// `{secret}` by the session's URL secret (`ReceiptWebhook.urlSecret`), which engine versions
    /// that cannot sign need.
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

    /// Posts `body`, signed as `engine` signs (`signed`), or unsigned to the session's secret URL.
    func post(_ body: Data, session: String, engine: ReceiptWebhook.Engine, signed: Bool) async {
        let target = url.replacingOccurrences(of: "{session}", with: session)
            .replacingOccurrences(of: "{secret}", with: ReceiptWebhook.urlSecret(engine, session: session, secret: secret))
        var request = HTTPClientRequest(url: target)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: body.first == UInt8(ascii: "{") ? "application/json" : "application/x-www-form-urlencoded")
        if signed {
            request.headers.add(name: engine.signatureHeader, value: ReceiptWebhook.signature(engine, body: body, secret: secret))
            if engine == .waha { request.headers.add(name: "X-Webhook-Hmac-Algorithm", value: "sha512") }
        }
        request.body = .bytes(ByteBuffer(bytes: body))
        _ = try? await HTTPClient.shared.execute(request, timeout: .seconds(5))
    }

    /// Sends a receipt's webhook(s) in order, with the chaos described above.
    func deliver(_ receipt: WhatsAppSimulator.Receipt, engine: ReceiptWebhook.Engine, signed: Bool,
                 render: @escaping @Sendable (WhatsAppSimulator.Receipt) -> Data) {
        Task {
            let copies = chaos ? 2 : 1
            for _ in 0..<copies { await post(render(receipt), session: receipt.session, engine: engine, signed: signed) }
            if chaos, receipt.kind == .read {
                var stale = receipt
                stale.kind = .delivered
                await post(render(stale), session: receipt.session, engine: engine, signed: signed)
            }
        }
    }
}
