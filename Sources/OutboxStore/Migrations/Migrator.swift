import Foundation
import Logging
import PostgresClient

/// One numbered SQL file from `migrations/`.
public struct Migration: Sendable, Equatable {
    public var version: Int
    public var name: String
    public var sql: String

    public init(version: Int, name: String, sql: String) {
        self.version = version
        self.name = name
        self.sql = sql
    }

    /// Reads `NNNN_description.sql` files, sorted by number. Two files with one number are refused.
    public static func load(directory: URL) throws -> [Migration] {
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path)
            .filter { $0.hasSuffix(".sql") }
        var migrations: [Migration] = []
        for file in files {
            guard let version = Int(file.prefix(while: \.isNumber)), file.first?.isNumber == true else {
                throw MigrationError("migration file \(file) must start with its number, like 0001_schema.sql")
            }
            let sql = try String(contentsOf: directory.appendingPathComponent(file), encoding: .utf8)
            migrations.append(Migration(version: version, name: file, sql: sql))
        }
        migrations.sort { $0.version < $1.version }
        for (a, b) in zip(migrations, migrations.dropFirst()) where a.version == b.version {
            throw MigrationError("\(a.name) and \(b.name) share the number \(a.version)")
        }
        return migrations
    }

    /// The `migrations/` folder: `WA_OUTBOX_MIGRATIONS` if set, else `./migrations`, else the one
    /// installed beside the executable (`../share/wa-outbox/migrations`), else the source tree's.
    public static func defaultDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
        if let path = environment["WA_OUTBOX_MIGRATIONS"] { return URL(fileURLWithPath: path) }
        let executable = URL(fileURLWithPath: CommandLine.arguments.first ?? ".").resolvingSymlinksInPath()
        let candidates = [
            URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent("migrations"),
            executable.deletingLastPathComponent().appendingPathComponent("../share/wa-outbox/migrations"),
            URL(fileURLWithPath: #filePath).appendingPathComponent("../../../../migrations"),
        ]
        return candidates.first { FileManager.default.fileExists(atPath: $0.standardized.path) }?.standardized ?? candidates[0]
    }
}

public struct MigrationError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// Where one migration file stands against a database.
public struct MigrationStatus: Sendable, Equatable {
    public enum State: String, Sendable { case applied, pending, edited, missingFile = "missing-file" }
    public var version: Int
    public var name: String
    public var state: State
    public var appliedAt: Date?

    public init(version: Int, name: String, state: State, appliedAt: Date?) {
        self.version = version
        self.name = name
        self.state = state
        self.appliedAt = appliedAt
    }
}

/// Applies migrations in order, each in its own transaction, under an advisory lock.
///
/// Guarantees: many processes may run `migrate` at once; the advisory lock makes them take turns,
/// and each finds the work done by the one before. A migration and its bookkeeping row commit
/// together, so a crash leaves every file either applied or not. A file edited after it was
/// applied is refused (its checksum no longer matches) instead of being silently skipped.
public struct Migrator: Sendable {
    /// `pg_advisory_lock` key: the bytes of "waoutbox" as a 64-bit integer.
    static let lockKey: Int64 = 0x7761_6f75_7462_6f78

    public var migrations: [Migration]
    public var logger: Logger

    public init(migrations: [Migration], logger: Logger) {
        self.migrations = migrations
        self.logger = logger
    }

    /// Applies pending migrations; returns the ones applied now.
    @discardableResult
    public func migrate(_ database: PostgresDatabase) async throws -> [Migration] {
        try await database.withConnection { connection in
            try await connection.query("SELECT pg_advisory_lock(\(Self.lockKey))")
            do {
                let applied = try await applyPending(connection)
                try await connection.query("SELECT pg_advisory_unlock(\(Self.lockKey))")
                return applied
            } catch {
                if !connection.isBroken { _ = try? await connection.query("SELECT pg_advisory_unlock(\(Self.lockKey))") }
                throw error
            }
        }
    }

    public func status(_ database: PostgresDatabase) async throws -> [MigrationStatus] {
        try await database.withConnection { connection in
            try await ensureBookkeeping(connection)
            let recorded = try await recordedMigrations(connection)
            var statuses: [MigrationStatus] = []
            for migration in migrations {
                let state: MigrationStatus.State
                if let row = recorded[migration.version] {
                    state = row.checksum == (try await checksum(migration, connection)) ? .applied : .edited
                } else {
                    state = .pending
                }
                statuses.append(MigrationStatus(version: migration.version, name: migration.name, state: state, appliedAt: recorded[migration.version]?.appliedAt))
            }
            for (version, row) in recorded where !migrations.contains(where: { $0.version == version }) {
                statuses.append(MigrationStatus(version: version, name: row.name, state: .missingFile, appliedAt: row.appliedAt))
            }
            return statuses.sorted { $0.version < $1.version }
        }
    }

    private func applyPending(_ connection: PostgresConnection) async throws -> [Migration] {
        try await ensureBookkeeping(connection)
        let recorded = try await recordedMigrations(connection)
        var applied: [Migration] = []
        for migration in migrations {
            let sum = try await checksum(migration, connection)
            if let row = recorded[migration.version] {
                guard row.checksum == sum else {
                    throw MigrationError("""
                        migration \(migration.name) was edited after it was applied (recorded checksum \
                        \(row.checksum.prefix(12)), file now \(sum.prefix(12))); restore the file as it was \
                        and put the change in a new migration
                        """)
                }
                continue
            }
            logger.info("applying migration", metadata: ["migration": "\(migration.name)"])
            try await connection.withTransaction { connection in
                do {
                    try await connection.execute(migration.sql)
                } catch let error as PostgresError {
                    throw MigrationError("migration \(migration.name) failed: \(error)")
                }
                try await connection.query("""
                    INSERT INTO wa_outbox.schema_migrations (version, name, checksum)
                    VALUES (\(migration.version), \(migration.name), \(sum))
                    """)
            }
            applied.append(migration)
        }
        return applied
    }

    private func ensureBookkeeping(_ connection: PostgresConnection) async throws {
        try await connection.execute("""
            CREATE SCHEMA IF NOT EXISTS wa_outbox;
            CREATE TABLE IF NOT EXISTS wa_outbox.schema_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            );
            """)
    }

    private func recordedMigrations(_ connection: PostgresConnection) async throws -> [Int: (name: String, checksum: String, appliedAt: Date)] {
        let rows = try await connection.query("SELECT version, name, checksum, applied_at FROM wa_outbox.schema_migrations")
        var result: [Int: (String, String, Date)] = [:]
        for row in rows {
            result[try row.decode(Int.self, at: 0)] = (try row.decode(at: 1), try row.decode(at: 2), try row.decode(at: 3))
        }
        return result
    }

    /// SHA-256 of the file, computed by the server so no hashing library is needed here.
    private func checksum(_ migration: Migration, _ connection: PostgresConnection) async throws -> String {
        let rows = try await connection.query("SELECT encode(sha256(convert_to(\(migration.sql), 'UTF8')), 'hex')")
        return try rows[0].decode(String.self, at: 0)
    }
}
