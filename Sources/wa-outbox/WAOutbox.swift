import ArgumentParser
import CMallocTuning  // linked for its load-time malloc arena cap (MallocArenasCommand shows it)
import Foundation
import LineOutput

@main
struct WAOutbox: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wa-outbox",
        abstract: "The asynchronous dispatch tier of the WhatsApp gateway.",
        subcommands: [Migrate.self, WorkerCommand.self, APICommand.self, EnqueueCommand.self, SessionsCommand.self, APIKeysCommand.self, JobsCommand.self, EventsCommand.self, StatsCommand.self, WorkersCommand.self, PruneCommand.self, SimulatorCommand.self, BenchSQLCommand.self, MallocArenasCommand.self]
    )

    static func main() async {
        do {
            var command = try parseAsRoot(nil)
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch {
            // The log lines still queued go first: the error must reach standard error whole, not
            // cut by the writer thread's last lines (it was, once, in CI).
            await LogSetup.standardError.flush()
            exit(withError: error)
        }
    }
}
