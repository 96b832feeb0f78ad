import ArgumentParser
import Foundation
import OutboxCore
import OutboxStore
import PostgresClient

/// The filters shared by `jobs list`, `replay` and `cancel`.
struct JobFilterOptions: ParsableArguments {
    @Option(name: .customLong("id"), help: "A job id (repeatable).") var ids: [Int64] = []
    @Option(help: "queued, running, succeeded, failed or canceled (repeatable).") var state: [String] = []
    @Option(help: "Organization.") var org: String?
    @Option(help: "Session id.") var session: String?
    @Option(help: "Chat JID.") var chat: String?
    @Option(help: "send, edit or revoke.") var kind: String?
    @Option(name: .customLong("error-code"), help: "Error code, such as account_restricted.") var errorCode: String?
    @Option(name: .customLong("created-after"), help: "ISO 8601 time.") var createdAfter: String?
    @Option(name: .customLong("created-before"), help: "ISO 8601 time.") var createdBefore: String?
    @Option(name: .customLong("failed-after"), help: "ISO 8601 time the job finished after.") var failedAfter: String?
    @Option(name: .customLong("failed-before"), help: "ISO 8601 time the job finished before.") var failedBefore: String?

    var isEmpty: Bool {
        ids.isEmpty && state.isEmpty && org == nil && session == nil && chat == nil && kind == nil && errorCode == nil
            && createdAfter == nil && createdBefore == nil && failedAfter == nil && failedBefore == nil
    }

    func filter() throws -> JobFilter {
        var filter = JobFilter()
        if !ids.isEmpty { filter.ids = ids }
        if !state.isEmpty {
            filter.states = try state.map {
                guard let value = JobState(rawValue: $0) else { throw ValidationError("unknown state \($0); use queued, running, succeeded, failed or canceled") }
                return value
            }
        }
        filter.org = org
        filter.session = session
        filter.chat = chat
        if let kind {
            guard let value = JobKind(rawValue: kind) else { throw ValidationError("unknown kind \(kind); use send, edit or revoke") }
            filter.kind = value
        }
        filter.errorCode = errorCode
        filter.createdAfter = try createdAfter.map(Self.date)
        filter.createdBefore = try createdBefore.map(Self.date)
        filter.finishedAfter = try failedAfter.map(Self.date)
        filter.finishedBefore = try failedBefore.map(Self.date)
        return filter
    }

    static func date(_ text: String) throws -> Date {
        guard let date = ISO8601DateFormatter().date(from: text) else { throw ValidationError("\(text) is not an ISO 8601 time like 2026-11-21T03:00:00Z") }
        return date
    }
}

struct JobsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "jobs",
        abstract: "Inspect, replay and cancel jobs.",
        subcommands: [List.self, Show.self, Replay.self, Cancel.self]
    )

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List jobs: a table, or JSON lines with --json.")
        @OptionGroup var database: DatabaseOptions
        @OptionGroup var filter: JobFilterOptions
        @Option(help: "At most this many.") var limit = 100
        @Flag(help: "JSON lines instead of a table.") var json = false

        func run() async throws {
            let db = try database.database(connections: 1, logger: makeLogger("wa-outbox.jobs"))
            let jobs = try await JobQueries.list(try filter.filter(), limit: limit, in: db)
            await db.close()
            if json { return jobs.forEach(printJSON) }
            print(pad("ID", 10) + pad("STATE", 10) + pad("KIND", 7) + pad("SESSION", 16) + pad("CHAT", 30) + pad("TRIES", 6) + "ERROR")
            for job in jobs {
                print(pad(String(job.id), 10) + pad(job.state, 10) + pad(job.kind, 7) + pad(job.session, 16) + pad(job.chat, 30)
                      + pad("\(job.attempts)/\(job.maxAttempts)", 6) + (job.errorCode.map { "\($0): \(job.errorMessage ?? "")" } ?? ""))
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "One job with its attempts, events and audit trail, as JSON.")
        @OptionGroup var database: DatabaseOptions
        @Argument(help: "The job id.") var id: Int64
        @Option(help: "Only if this organization owns it.") var org: String?
        @Flag(name: .customLong("show-body"), help: "Include the payload (the message body).") var showBody = false

        func run() async throws {
            let db = try database.database(connections: 1, logger: makeLogger("wa-outbox.jobs"))
            let detail = try await JobQueries.show(id, org: org, includePayload: showBody, in: db)
            await db.close()
            guard let detail else {
                printJSON(ErrorBody(error: .init(code: ErrorCode.notFound.rawValue, message: "no job \(id)\(org.map { " in organization \($0)" } ?? "")")))
                throw ExitCode(1)
            }
            printJSON(detail)
        }
    }

    struct Replay: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Put failed or canceled jobs back in the queue with a fresh attempt budget.",
            discussion: "Sends keep their WhatsApp message id (a message that did arrive is not delivered twice) unless --new-message-id. Edits and revokes whose window has passed are reported and skipped."
        )
        @OptionGroup var database: DatabaseOptions
        @OptionGroup var filter: JobFilterOptions
        @Option(help: "Why (kept in the audit trail).") var reason: String
        @Option(help: "Who (kept in the audit trail); default $USER.") var actor: String?
        @Flag(name: .customLong("new-message-id"), help: "Give sends a new WhatsApp message id.") var newMessageID = false
        @Flag(name: .customLong("dry-run"), help: "Show how many and which, change nothing.") var dryRun = false

        func run() async throws {
            guard !filter.isEmpty else { throw ValidationError("name the jobs: --id, --state, --session, … (replaying everything is never what you want)") }
            let db = try database.database(connections: 1, logger: makeLogger("wa-outbox.jobs"))
            let plan = try await JobQueries.planReplay(try filter.filter(), in: db)
            for skipped in plan.skipped { FileHandle.standardError.write(Data("skip \(skipped.id): \(skipped.reason)\n".utf8)) }
            if dryRun {
                print("would replay \(plan.done.count) jobs: \(plan.done.prefix(50).map(String.init).joined(separator: " "))\(plan.done.count > 50 ? " …" : "")")
                return await db.close()
            }
            let many = plan.done.count > JobQueries.replayBatch
            let replayed = try await JobQueries.replayAll(plan.done, actor: actor ?? environment["USER"] ?? "operator", reason: reason,
                                                          newMessageID: newMessageID, in: db) { count in
                if many { FileHandle.standardError.write(Data("\rreplayed \(count)/\(plan.done.count)".utf8)) }
            }.count
            if many { FileHandle.standardError.write(Data("\n".utf8)) }
            await db.close()
            print("replayed \(replayed) jobs, skipped \(plan.skipped.count)")
        }
    }

    struct Cancel: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Cancel queued jobs (a running dispatch cannot be stopped halfway).")
        @OptionGroup var database: DatabaseOptions
        @OptionGroup var filter: JobFilterOptions
        @Option(help: "Why (kept in the audit trail).") var reason: String
        @Option(help: "Who; default $USER.") var actor: String?

        func run() async throws {
            guard !filter.isEmpty else { throw ValidationError("name the jobs: --id, --state, --session, …") }
            let db = try database.database(connections: 1, logger: makeLogger("wa-outbox.jobs"))
            let report = try await JobQueries.cancel(try filter.filter(), actor: actor ?? environment["USER"] ?? "operator", reason: reason, in: db)
            await db.close()
            for skipped in report.skipped { FileHandle.standardError.write(Data("not canceled \(skipped.id): \(skipped.reason)\n".utf8)) }
            print("canceled \(report.done.count) jobs, left \(report.skipped.count)")
        }
    }
}

func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? String(text.prefix(width - 1)) + " " : text + String(repeating: " ", count: width - text.count)
}
