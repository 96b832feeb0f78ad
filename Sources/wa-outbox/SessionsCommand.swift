import ArgumentParser
import Foundation
import OutboxCore
import OutboxStore
import PostgresClient

struct SessionsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sessions",
        abstract: "Register and list WhatsApp sessions.",
        subcommands: [Add.self, List.self]
    )

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Register a session, or update it.")
        @OptionGroup var database: DatabaseOptions
        @Option(help: "Session id.") var id: String
        @Option(help: "Organization that owns it.") var org: String
        @Option(help: "sim or wuzapi.") var engine: String
        @Option(help: "The engine's base URL (wuzapi).") var url: String?
        @Option(name: .customLong("token-env"), help: "Environment variable holding the engine token.") var tokenEnv: String?
        @Option(name: .customLong("token-file"), help: "File holding the engine token.") var tokenFile: String?
        @Option(name: .customLong("max-in-flight"), help: "Jobs of this session dispatched at once, across all workers.") var maxInFlight: Int = 1

        func run() async throws {
            let logger = makeLogger("wa-outbox.sessions")
            let db = try database.database(connections: 1, logger: logger)
            let reference = tokenEnv.map { "env:\($0)" } ?? tokenFile.map { "file:\($0)" }
            do {
                try await SessionRegistry.upsert(SessionRecord(id: id, org: org, engine: engine, engineURL: url,
                                                               credentialRef: reference, maxInFlight: maxInFlight), in: db)
                await db.close()
            } catch {
                await db.close()
                printJSON(ErrorBody(error: .init(code: error.code.rawValue, message: error.message)))
                throw ExitCode(1)
            }
            print("session \(id) registered")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List sessions as JSON lines.")
        @OptionGroup var database: DatabaseOptions
        @Option(help: "Only this organization's.") var org: String?

        func run() async throws {
            let logger = makeLogger("wa-outbox.sessions")
            let db = try database.database(connections: 1, logger: logger)
            let sessions = try await SessionRegistry.all(in: db, org: org)
            await db.close()
            sessions.forEach(printJSON)
        }
    }
}
