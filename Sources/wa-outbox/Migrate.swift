import ArgumentParser
import Foundation
import OutboxStore
import PostgresClient

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Apply pending migrations in order, under an advisory lock (safe to run from many processes at once)."
    )

    @OptionGroup var database: DatabaseOptions

    @Flag(help: "List applied and pending migrations instead of applying them.")
    var status = false

    @Option(help: "Folder of numbered .sql files (env: WA_OUTBOX_MIGRATIONS).")
    var migrations: String?

    func run() async throws {
        let logger = makeLogger("wa-outbox.migrate")
        let directory = migrations.map { URL(fileURLWithPath: $0) } ?? Migration.defaultDirectory()
        let migrator = Migrator(migrations: try Migration.load(directory: directory), logger: logger)
        let db = PostgresDatabase(configuration: try database.configuration(), maxConnections: 1, logger: logger)
        defer { Task { await db.close() } }
        do {
            if status {
                for entry in try await migrator.status(db) {
                    let when = entry.appliedAt.map { ISO8601DateFormatter().string(from: $0) } ?? "-"
                    print("\(entry.state.rawValue.padding(toLength: 13, withPad: " ", startingAt: 0)) \(entry.name)  \(when)")
                }
            } else {
                let applied = try await migrator.migrate(db)
                print(applied.isEmpty ? "schema is up to date" : "applied \(applied.count): \(applied.map(\.name).joined(separator: ", "))")
            }
            await db.close()
        } catch {
            await db.close()
            throw error
        }
    }
}
