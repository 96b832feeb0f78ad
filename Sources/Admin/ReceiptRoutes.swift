import Foundation
import HTTPSurface
import Hummingbird
import Logging
import OutboxCore
import OutboxStore
import PostgresClient
import Receipts

/// `POST /webhooks/waha` and `POST /webhooks/wuzapi/{session}`: the engines' receipt webhooks.
///
/// Each engine signs its webhooks with its own shared secret (`WA_OUTBOX_WAHA_WEBHOOK_SECRET`,
/// `WA_OUTBOX_WUZAPI_WEBHOOK_SECRET`). A request with a wrong or missing signature, or for an
/// engine without a secret, is refused with 401 and writes nothing. Events that are not receipts
/// are acknowledged and ignored, so an engine that posts all its events does not retry them.
///
/// Engine versions that cannot sign (WAHA Core before HMAC, wuzapi before late 2025) post to
/// `/webhooks/waha/{session}/{secret}` or `/webhooks/wuzapi/{session}/{secret}` instead, where the
/// secret is that session's own (`ReceiptWebhook.urlSecret`): such a request writes receipts of
/// that session only, and a WAHA body naming another session is refused.
enum ReceiptRoutes {
    static func register(on router: Router<BasicRequestContext>, database: PostgresDatabase, secrets: [ReceiptWebhook.Engine: String]) {
        router.post("/webhooks/waha") { request, context in
            try await receive(.waha, session: nil, request, context, database: database, secret: secrets[.waha])
        }
        router.post("/webhooks/wuzapi/:session") { request, context in
            try await receive(.wuzapi, session: context.parameters.get("session"), request, context, database: database, secret: secrets[.wuzapi])
        }
        for engine in ReceiptWebhook.Engine.allCases {
            router.post("/webhooks/\(engine.rawValue)/:session/:secret") { request, context in
                try await receive(engine, session: context.parameters.get("session"), request, context, database: database,
                                  secret: secrets[engine], urlSecret: context.parameters.get("secret") ?? "")
            }
        }
    }

    /// `urlSecret`: the session's secret from the URL, for engines that cannot sign; nil: the
    /// body's signature is checked.
    private static func receive(_ engine: ReceiptWebhook.Engine, session: String?, _ request: Request, _ context: BasicRequestContext,
                                database: PostgresDatabase, secret: String?, urlSecret: String? = nil) async throws -> Response {
        let body: Data
        do {
            body = Data(try await request.body.collect(upTo: 1 << 20).readableBytesView)
        } catch let error as any HTTPResponseError where error.status == .contentTooLarge {
            throw APIError(.contentTooLarge, .payloadTooLarge, "a webhook body is at most 1 MiB")
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            throw APIError.validation("the body ended early or is malformed: \(type(of: error))")
        }
        let authentic: Bool = if let secret, let urlSecret, let session {
            ReceiptWebhook.verifyURLSecret(engine, session: session, presented: urlSecret, secret: secret)
        } else if let secret {
            ReceiptWebhook.verify(engine, body: body, presented: request.headers[.init(engine.signatureHeader)!], secret: secret)
        } else {
            false
        }
        guard authentic else {
            context.logger.warning("receipt webhook refused: bad signature", metadata: ["engine": "\(engine.rawValue)"])
            throw APIError.unauthorized("missing or wrong webhook signature")
        }
        let receipts = ReceiptWebhook.receipts(engine, body: body, session: session)
        if urlSecret != nil, receipts.contains(where: { $0.session != session }) {
            context.logger.warning("receipt webhook refused: the body names another session than the URL", metadata: ["engine": "\(engine.rawValue)"])
            return json(.unauthorized, #"{"error":{"code":"unauthorized","message":"this URL takes receipts of its own session only"}}"#)
        }
        let written = try await ReceiptStore.record(receipts, in: database)
        return json(.ok, #"{"receipts":\#(receipts.count),"events":\#(written)}"#)
    }

    private static func json(_ status: HTTPResponse.Status, _ text: String) -> Response {
        var response = Response(status: status, body: .init(byteBuffer: ByteBuffer(string: text)))
        response.headers[.contentType] = "application/json"
        return response
    }
}
