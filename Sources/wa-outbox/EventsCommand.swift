import ArgumentParser
import Foundation
import OutboxStore
import PostgresClient

struct EventsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "events",
        abstract: "Read the message.status stream.",
        subcommands: [Tail.self]
    )

    struct Tail: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print events after a cursor as JSON lines; --follow keeps waiting for more.")
        @OptionGroup var database: DatabaseOptions
        @Option(help: "Only this organization's events.") var org: String?
        @Option(help: "Print events with an id greater than this.") var after: Int64 = 0
        @Flag(help: "Wait for new events (LISTEN, with polling as a fallback).") var follow = false

        func run() async throws {
            let logger = makeLogger("wa-outbox.events")
            let db = try database.database(connections: 1, logger: logger)
            var cursor = try await EventLog.cursor(afterID: after, org: org, in: db)
            let listener = follow ? PostgresListener(configuration: try database.configuration(), channels: ["wa_outbox_events"], logger: logger) : nil
            var wakeups = listener?.events().makeAsyncIterator()
            while true {
                let events = try await EventLog.after(cursor, org: org, in: db)
                for event in events { printJSON(event) }
                cursor = events.last?.cursor ?? cursor
                if events.count == 500 { continue }
                guard wakeups != nil else { break }
                _ = await wakeups?.next()
            }
            await db.close()
        }
    }
}
