import ArgumentParser

@main
struct WAOutbox: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wa-outbox",
        abstract: "The asynchronous dispatch tier of the WhatsApp gateway.",
        subcommands: [Migrate.self, WorkerCommand.self, EnqueueCommand.self, SessionsCommand.self, JobsCommand.self, EventsCommand.self, StatsCommand.self, WorkersCommand.self, PruneCommand.self, SimulatorCommand.self, BenchSQLCommand.self]
    )
}
