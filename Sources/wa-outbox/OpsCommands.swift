import ArgumentParser
import Foundation
import OutboxStore
import PostgresClient

/// Retention settings shared by `prune` and the worker's periodic prune.
struct RetentionOptions: ParsableArguments {
    @Option(name: .customLong("keep-jobs-hours"), help: "Keep finished jobs this long (env: WA_OUTBOX_KEEP_JOBS_HOURS; default 168).")
    var jobsHours: Int?
    @Option(name: .customLong("keep-events-hours"), help: "Keep events this long (env: WA_OUTBOX_KEEP_EVENTS_HOURS; default 168).")
    var eventsHours: Int?

    var retention: Retention {
        var retention = Retention()
        retention.jobs = .seconds(3_600 * setting(jobsHours, "WA_OUTBOX_KEEP_JOBS_HOURS", 168))
        retention.events = .seconds(3_600 * setting(eventsHours, "WA_OUTBOX_KEEP_EVENTS_HOURS", 168))
        return retention
    }
}

struct PruneCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune",
        abstract: "Delete finished jobs, events and idle lanes past their retention, in small batches (one process at a time)."
    )
    @OptionGroup var database: DatabaseOptions
    @OptionGroup var retention: RetentionOptions

    func run() async throws {
        let db = try database.database(connections: 1, logger: makeLogger("wa-outbox.prune"))
        let report = try await Maintenance.prune(retention.retention, in: db)
        await db.close()
        printJSON(report)
    }
}

struct StatsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "stats", abstract: "Jobs by state, the oldest queued job's age, throughput, the busiest sessions.")
    @OptionGroup var database: DatabaseOptions
    @Option(help: "Only this organization.") var org: String?
    @Flag(help: "JSON instead of text.") var json = false
    @Flag(help: "Refresh every 2 seconds until interrupted.") var watch = false

    func run() async throws {
        let db = try database.database(connections: 1, logger: makeLogger("wa-outbox.stats"))
        repeat {
            let stats = try await QueueStats.read(from: db, org: org)
            if json {
                printJSON(stats)
            } else {
                if watch { print("\u{1B}[H\u{1B}[2J", terminator: "") }
                let states = ["queued", "running", "succeeded", "failed", "canceled"].map { "\($0) \(stats.byState[$0] ?? 0)" }
                print("jobs: " + states.joined(separator: "   "))
                print("oldest queued: " + (stats.oldestQueuedSeconds.map { String(format: "%.1f s", $0) } ?? "-")
                      + "   finished in the last minute: \(stats.finishedLastMinute)   live workers: \(stats.liveWorkers)")
                print("busiest sessions:")
                for load in stats.busiestSessions { print("  \(pad(load.session, 24)) queued \(load.queued)   busy chats \(load.inFlight)") }
            }
            if watch { try await Task.sleep(for: .seconds(2)) }
        } while watch
        await db.close()
    }
}

struct WorkersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "workers", abstract: "Live workers, their heartbeats and in-flight counts, as JSON lines.")
    @OptionGroup var database: DatabaseOptions

    func run() async throws {
        let db = try database.database(connections: 1, logger: makeLogger("wa-outbox.workers"))
        let workers = try await WorkerRecord.all(in: db)
        await db.close()
        workers.forEach(printJSON)
    }
}
