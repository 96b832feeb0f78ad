import ArgumentParser
import Engines
import Foundation
import JobDispatch
import OutboxCore
import OutboxStore
import PostgresClient
import Simulator

extension SessionsCommand {
    /// `wa-outbox sessions check --id S --org O`: asks the session's engine for its version, engine
    /// and tier (where it says them) and the session's status, and prints which operations will
    /// work, as JSON (`EngineCheck`).
    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Ask a session's engine what it is and what will work there; prints JSON.")
        @OptionGroup var database: DatabaseOptions
        @OptionGroup var session: SessionID

        func run() async throws {
            var result: EngineCheck?
            try await SessionsCommand.perform(database) { db throws(OutboxError) in
                result = try await SessionsCommand.check(session.id, org: session.org, in: db)
            }
            if let result { printJSON(result) }
        }
    }

    /// The check of a registered session, through the engine a worker would use.
    static func check(_ id: String, org: String, in db: PostgresDatabase) async throws(OutboxError) -> EngineCheck {
        let found: SessionRecord?
        do { found = try await SessionRegistry.find(id, in: db) } catch { throw OutboxError(.validationError, "\(error)") }
        guard let record = found, record.org == org else { throw OutboxError(.notFound, "session \(id) does not exist in organization \(org)") }
        let simulator: WhatsAppSimulator
        do { simulator = try WhatsAppSimulator() } catch { throw OutboxError(.engineError, "\(error)") }
        let engines = engineDirectory(database: db, simulator: simulator, requestTimeout: .seconds(10))
        do {
            return await (try engines.context(for: id, settings: record)).engine.check(session: id)
        } catch {
            throw OutboxError(.engineError, "cannot reach the engine of session \(id): \(error)")
        }
    }

    /// After `sessions add`: the check's warnings and what will not work.
    static func warn(_ check: EngineCheck) {
        for warning in check.warnings { print("warning: \(warning)") }
        for operation in check.operations where operation.works == false {
            print("warning: \(operation.name) will not work\(operation.note.map { ": \($0)" } ?? "")")
        }
        if check.status != "connected" { print("warning: the session is \(check.status)") }
    }
}
