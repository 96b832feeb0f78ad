import ArgumentParser
import Foundation
import OutboxCore
import OutboxStore
import PostgresClient

struct SessionsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sessions",
        abstract: "Register, inspect, change and remove WhatsApp sessions.",
        subcommands: [Add.self, List.self, Show.self, Set.self, Remove.self, Check.self]
    )

    /// Per-session limits, shared by `add` and `set`; unset ones keep the worker's defaults.
    struct LimitOptions: ParsableArguments {
        @Option(name: .customLong("rate-per-second"), help: "Sustained sends per second.") var ratePerSecond: Double?
        @Option(help: "Sends allowed at once after a quiet period.") var burst: Int?
        @Option(help: "Anti-ban pacing: on or off.") var pacing: OnOff?
        @Option(name: .customLong("min-gap-ms"), help: "Pacing: shortest gap between two sends.") var minGap: Int?
        @Option(name: .customLong("max-gap-ms"), help: "Pacing: longest gap between two sends.") var maxGap: Int?
        @Option(name: .customLong("hourly-budget"), help: "Sends per clock hour.") var hourlyBudget: Int?
        @Option(name: .customLong("daily-budget"), help: "Sends per UTC day.") var dailyBudget: Int?

        func apply(to record: inout SessionRecord) {
            record.ratePerSecond = ratePerSecond
            record.burst = burst
            record.pacing = pacing.map { $0 == .on }
            record.minGapMilliseconds = minGap
            record.maxGapMilliseconds = maxGap
            record.hourlyBudget = hourlyBudget
            record.dailyBudget = dailyBudget
        }

        func apply(to changes: inout SessionRegistry.Changes) {
            changes.ratePerSecond = ratePerSecond
            changes.burst = burst
            changes.pacing = pacing.map { $0 == .on }
            changes.minGapMilliseconds = minGap
            changes.maxGapMilliseconds = maxGap
            changes.hourlyBudget = hourlyBudget
            changes.dailyBudget = dailyBudget
        }
    }

    enum OnOff: String, ExpressibleByArgument { case on, off }

    /// Which session: its id and the organization that owns it.
    struct SessionID: ParsableArguments {
        @Option(help: "Session id.") var id: String
        @Option(help: "Organization that owns it.") var org: String
    }

    /// Runs a registry call, printing its error as the API's error body.
    static func perform(_ database: DatabaseOptions, _ body: (PostgresDatabase) async throws(OutboxError) -> Void) async throws {
        let db = try database.database(connections: 1, logger: makeLogger("wa-outbox.sessions"))
        do {
            try await body(db)
            await db.close()
        } catch {
            await db.close()
            printJSON(ErrorBody(error: .init(code: error.code.rawValue, message: error.message)))
            throw ExitCode(1)
        }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Register a session, or update it.")
        @OptionGroup var database: DatabaseOptions
        @Option(help: "Session id.") var id: String
        @Option(help: "Organization that owns it.") var org: String
        @Option(help: "sim, waha or wuzapi.") var engine: String
        @Option(help: "The engine's base URL (waha, wuzapi).") var url: String?
        @Option(name: .customLong("token-env"), help: "Environment variable holding the engine token.") var tokenEnv: String?
        @Option(name: .customLong("token-file"), help: "File holding the engine token.") var tokenFile: String?
        @Option(name: .customLong("max-in-flight"), help: "Jobs of this session dispatched at once, across all workers.") var maxInFlight: Int = 1
        @OptionGroup var limits: LimitOptions

        func run() async throws {
            let reference = tokenEnv.map { "env:\($0)" } ?? tokenFile.map { "file:\($0)" }
            var record = SessionRecord(id: id, org: org, engine: engine, engineURL: url, credentialRef: reference, maxInFlight: maxInFlight)
            limits.apply(to: &record)
            try await SessionsCommand.perform(database) { db throws(OutboxError) in
                try await SessionRegistry.upsert(record, in: db)
                guard engine != "sim" else { return }
                do throws(OutboxError) {
                    SessionsCommand.warn(try await SessionsCommand.check(id, org: org, in: db))
                } catch {
                    print("warning: the engine could not be checked: \(error.message)")
                }
            }
            print("session \(id) registered")
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one session as JSON: settings, state, engine status.")
        @OptionGroup var database: DatabaseOptions
        @OptionGroup var session: SessionID

        func run() async throws {
            try await SessionsCommand.perform(database) { db throws(OutboxError) in
                let found: SessionRecord?
                do { found = try await SessionRegistry.find(session.id, in: db) } catch { throw OutboxError(.validationError, "\(error)") }
                guard let record = found, record.org == session.org else {
                    throw OutboxError(.notFound, "session \(session.id) does not exist in organization \(session.org)")
                }
                printJSON(record)
            }
        }
    }

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Change a session: state (active clears a restriction), engine URL, credential reference, limits.")
        @OptionGroup var database: DatabaseOptions
        @OptionGroup var session: SessionID
        @Option(help: "active or paused.") var state: String?
        @Option(help: "Why (recorded with the state).") var reason: String?
        @Option(help: "The engine's base URL.") var url: String?
        @Option(name: .customLong("token-env"), help: "Environment variable holding the engine token.") var tokenEnv: String?
        @Option(name: .customLong("token-file"), help: "File holding the engine token.") var tokenFile: String?
        @Option(name: .customLong("max-in-flight"), help: "Jobs of this session dispatched at once, across all workers.") var maxInFlight: Int?
        @OptionGroup var limits: LimitOptions

        func run() async throws {
            var changes = SessionRegistry.Changes()
            changes.state = state
            changes.reason = reason
            changes.engineURL = url
            changes.credentialRef = tokenEnv.map { "env:\($0)" } ?? tokenFile.map { "file:\($0)" }
            changes.maxInFlight = maxInFlight
            limits.apply(to: &changes)
            try await SessionsCommand.perform(database) { db throws(OutboxError) in try await SessionRegistry.update(session.id, org: session.org, changes, in: db) }
            print("session \(session.id) updated")
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a session that has no queued or running jobs.")
        @OptionGroup var database: DatabaseOptions
        @OptionGroup var session: SessionID

        func run() async throws {
            try await SessionsCommand.perform(database) { db throws(OutboxError) in try await SessionRegistry.remove(session.id, org: session.org, in: db) }
            print("session \(session.id) removed")
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
