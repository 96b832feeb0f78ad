import ArgumentParser
import Foundation
import OutboxCore
import OutboxStore
import PostgresClient

struct EnqueueCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enqueue",
        abstract: "Enqueue one send, edit or revoke and print its SendResult as JSON.",
        discussion: """
            Payloads (README, "Payloads"):
              send text     {"type":"text","chat":"4915112345678@s.whatsapp.net","text":"Hello"}
              send poll     {"type":"poll","chat":"...","name":"Lunch?","options":["Pizza","Sushi"],"multipleAnswers":false}
              send location {"type":"location","chat":"...","latitude":52.52,"longitude":13.405,"name":"Office"}
              send contact  {"type":"contact","chat":"...","contacts":[{"name":"Ada","phone":"+4915112345678"}]}
              edit          {"chat":"...","messageId":"3EB0...","text":"Corrected"}
              revoke        {"chat":"...","messageId":"3EB0...","sender":"optional participant JID"}
            """
    )

    @OptionGroup var database: DatabaseOptions
    @Option(help: "Organization that owns the session.") var org: String
    @Option(help: "Session id.") var session: String
    @Option(help: "send, edit or revoke.") var kind: String = "send"
    @Option(help: "The JSON payload.") var payload: String
    @Option(name: .customLong("idempotency-key"), help: "Makes retries safe: a seen key returns the original job.") var idempotencyKey: String?

    func run() async throws {
        let logger = makeLogger("wa-outbox.enqueue")
        guard let jobKind = JobKind(rawValue: kind) else {
            printJSON(ErrorBody(error: .init(code: ErrorCode.validationError.rawValue, message: "kind must be send, edit or revoke")))
            throw ExitCode(1)
        }
        let db = try database.database(connections: 1, logger: logger)
        do {
            let result = try await Outbox.enqueue(
                EnqueueRequest(org: org, session: session, kind: jobKind, payload: payload, idempotencyKey: idempotencyKey), in: db)
            printJSON(result)
            await db.close()
        } catch {
            printJSON(ErrorBody(error: .init(code: error.code.rawValue, message: error.message)))
            await db.close()
            throw ExitCode(1)
        }
    }
}
