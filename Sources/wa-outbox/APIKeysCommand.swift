import ArgumentParser
import Foundation
import OutboxCore
import OutboxStore
import PostgresClient

struct APIKeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apikeys",
        abstract: "Create, list and revoke the API keys of scripts and services calling the gateway API.",
        subcommands: [Create.self, List.self, Revoke.self]
    )

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a key and print it once: only its prefix and a hash are kept, so it cannot be shown again.")
        @OptionGroup var database: DatabaseOptions
        @Option(help: "Organization the key acts for.") var org: String
        @Option(help: "A name to recognize the key by (the script or service using it).") var name: String
        @Option(help: "Comma-separated gateway permissions: send, read, operate.") var permissions: String

        func run() async throws {
            let wanted = permissions.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            try await SessionsCommand.perform(database) { db throws(OutboxError) in
                let created = try await APIKeys.create(org: org, name: name, permissions: wanted, in: db)
                print(created.key)
                FileHandle.standardError.write(Data("""
                    key \(created.record.id) (\(created.record.prefix)) created for \(org) with \(created.record.permissions.joined(separator: ",")); \
                    store it now: it is not shown again
                    
                    """.utf8))
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List an organization's keys as JSON lines (prefixes, never secrets).")
        @OptionGroup var database: DatabaseOptions
        @Option(help: "Organization.") var org: String

        func run() async throws {
            let db = try database.database(connections: 1, logger: makeLogger("wa-outbox.apikeys"))
            let keys: [APIKeyRecord]
            do { keys = try await APIKeys.list(org: org, in: db) } catch { await db.close(); throw error }
            await db.close()
            keys.forEach(printJSON)
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a key: refused from the next request on.")
        @OptionGroup var database: DatabaseOptions
        @Option(help: "The key's id (from list).") var id: Int64
        @Option(help: "Only if this organization owns it.") var org: String?

        func run() async throws {
            try await SessionsCommand.perform(database) { db throws(OutboxError) in
                let record = try await APIKeys.revoke(id: id, org: org, in: db)
                print("key \(record.id) (\(record.prefix)) revoked")
            }
        }
    }
}
