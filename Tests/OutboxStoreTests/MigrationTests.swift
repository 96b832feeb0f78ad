import Foundation
import OutboxStore
import PostgresClient
import Testing
import TestSupport

@Suite("Migrations against a real server")
struct MigrationTests {
    func database(_ url: String) -> PostgresDatabase {
        PostgresDatabase(configuration: PostgresConfiguration(url), maxConnections: 2, logger: TestEnvironment.logger)
    }

    func shippedMigrations() throws -> [Migration] {
        try Migration.load(directory: TestEnvironment.migrationsDirectory)
    }

    @Test func applyingTwiceIsANoOp() async throws {
        let db = database(try await TestEnvironment.freshDatabase(prefix: "mig"))
        let migrator = Migrator(migrations: try shippedMigrations(), logger: TestEnvironment.logger)
        let first = try await migrator.migrate(db)
        #expect(first.count == migrator.migrations.count)
        #expect(!first.isEmpty)
        let second = try await migrator.migrate(db)
        #expect(second.isEmpty)
        let statuses = try await migrator.status(db)
        #expect(statuses.allSatisfy { $0.state == .applied })
        await db.close()
    }

    @Test func twoProcessesMigratingAtOnceLeaveOneConsistentResult() async throws {
        let url = try await TestEnvironment.freshDatabase(prefix: "mig")
        let executable = try TestEnvironment.executable()
        let arguments = ["migrate", "--database-url", url, "--migrations", TestEnvironment.migrationsDirectory.path]
        let processes = try (0..<2).map { _ in try Subprocess.launch(executable, arguments) }
        var statuses: [Int32] = []
        for process in processes { statuses.append(await Subprocess.terminationStatus(of: process)) }
        #expect(statuses == [0, 0])
        let db = database(url)
        let rows = try await db.query("SELECT version, count(*) OVER () FROM wa_outbox.schema_migrations ORDER BY version")
        #expect(try rows.map { try $0.decode(Int.self, at: 0) } == (try shippedMigrations()).map(\.version))
        let migrator = Migrator(migrations: try shippedMigrations(), logger: TestEnvironment.logger)
        #expect(try await migrator.status(db).allSatisfy { $0.state == .applied })
        await db.close()
    }

    @Test func anEditedAppliedFileIsRefused() async throws {
        let db = database(try await TestEnvironment.freshDatabase(prefix: "mig"))
        var migrations = try shippedMigrations()
        try await Migrator(migrations: migrations, logger: TestEnvironment.logger).migrate(db)
        migrations[0].sql += "\n-- an innocent-looking edit\n"
        let edited = Migrator(migrations: migrations, logger: TestEnvironment.logger)
        do {
            try await edited.migrate(db)
            Issue.record("an edited migration was accepted")
        } catch let error as MigrationError {
            #expect(error.description.contains("was edited after it was applied"))
            #expect(error.description.contains(migrations[0].name))
        }
        #expect(try await edited.status(db).first?.state == .edited)
        await db.close()
    }

    @Test func theBuildExpectsTheNewestMigration() throws {
        #expect(SchemaVersion.current == (try shippedMigrations()).map(\.version).max())
    }

    @Test func pendingFilesAreListed() async throws {
        let db = database(try await TestEnvironment.freshDatabase(prefix: "mig"))
        var migrations = try shippedMigrations()
        try await Migrator(migrations: migrations, logger: TestEnvironment.logger).migrate(db)
        migrations.append(Migration(version: 9_999, name: "9999_later.sql", sql: "CREATE TABLE wa_outbox.later (id int);"))
        let statuses = try await Migrator(migrations: migrations, logger: TestEnvironment.logger).status(db)
        #expect(statuses.last == MigrationStatus(version: 9_999, name: "9999_later.sql", state: .pending, appliedAt: nil))
        await db.close()
    }

    /// A fresh database migrated up to (not including) `version`, with one session and one
    /// queued send in each of two chats; and every shipped migration, to finish the upgrade.
    func databaseBefore(_ version: Int, session: String) async throws -> (PostgresDatabase, [Migration]) {
        let db = database(try await TestEnvironment.freshDatabase(prefix: "mig"))
        let all = try shippedMigrations()
        try await Migrator(migrations: all.filter { $0.version < version }, logger: TestEnvironment.logger).migrate(db)
        try await db.query("INSERT INTO wa_outbox.sessions (id, org, engine) VALUES (\(session), 'org1', 'sim')")
        for chat in ["491510000001@s.whatsapp.net", "491510000002@s.whatsapp.net"] {
            try await db.query("""
                SELECT wa_outbox.enqueue('org1', \(session), 'send', jsonb_build_object('type', 'text', 'text', 'hi', 'chat', \(chat)))
                """)
        }
        return (db, all)
    }

    /// 0008 moves "which job is running" from an index on the job row to its lane. A database
    /// upgraded while a job runs must keep that job findable by the rescue, or a worker that died
    /// mid-upgrade would leave it running for ever.
    @Test func upgradingTo0008KeepsARunningJobFindableThroughItsLane() async throws {
        let (db, all) = try await databaseBefore(8, session: "up1")
        // What a 0007 claim leaves: the first chat's job running under a worker whose lease lapsed.
        let running: Int64 = try await db.query("""
            UPDATE wa_outbox.jobs SET state = 'running', attempts = 1, worker_id = gen_random_uuid()
            WHERE chat = '491510000001@s.whatsapp.net' RETURNING id
            """)[0].decode(at: 0)
        try await db.query("UPDATE wa_outbox.lanes SET busy = true, ready_at = NULL WHERE chat = '491510000001@s.whatsapp.net'")

        try await Migrator(migrations: all, logger: TestEnvironment.logger).migrate(db)
        let lanes = try await db.query("SELECT chat, running_job FROM wa_outbox.lanes ORDER BY chat")
        #expect(try lanes.map { try $0.decode(Int64?.self, at: 1) } == [running, nil])
        let rescued = try await db.withConnection { try await RescueQuery.rescue(on: $0) }.count
        #expect(rescued == 1)
        #expect(try await db.query("SELECT state FROM wa_outbox.jobs WHERE id = \(running)")[0].decode(String.self, at: 0) == "queued")
        #expect(try await db.query("SELECT count(*) FROM wa_outbox.lanes WHERE busy OR running_job IS NOT NULL")[0].decode(Int.self, at: 0) == 0)
        await db.close()
    }

    /// 0021 counts a session's in-flight by runs and frees a lane when its run's last job is
    /// completed. A job running across the upgrade is still rescued and frees its lane and session;
    /// the lane updates of workers built before it (which leave `run_left` alone) are refused, so an
    /// old worker can neither claim a lane nor free one that a new worker's run holds.
    @Test func upgradingTo0021KeepsARunningJobRescuableAndRefusesOldLaneUpdates() async throws {
        let (db, all) = try await databaseBefore(21, session: "up21")
        // What a 0020 claim leaves: the first chat's job running under a worker whose lease lapsed.
        let running: Int64 = try await db.query("""
            UPDATE wa_outbox.jobs SET state = 'running', attempts = 1, worker_id = gen_random_uuid(), claim_token = gen_random_uuid()
            WHERE chat = '491510000001@s.whatsapp.net' RETURNING id
            """)[0].decode(at: 0)
        try await db.query("""
            UPDATE wa_outbox.lanes SET busy = true, running_job = \(running), ready_at = NULL WHERE chat = '491510000001@s.whatsapp.net'
            """)
        try await db.query("UPDATE wa_outbox.sessions SET in_flight = 1")

        try await Migrator(migrations: all, logger: TestEnvironment.logger).migrate(db)
        // A 0020 claim of the other lane, and a 0020 completion of the running one: both refused.
        for old in ["UPDATE wa_outbox.lanes SET busy = true, running_job = 1, ready_at = NULL WHERE chat = '491510000002@s.whatsapp.net'",
                    "UPDATE wa_outbox.lanes SET busy = false, running_job = NULL WHERE chat = '491510000001@s.whatsapp.net'"] {
            await #expect(throws: (any Error).self) { try await db.query(PostgresQuery(old)) }
        }
        let rescued = try await db.withConnection { try await RescueQuery.rescue(on: $0) }.count
        #expect(rescued == 1)
        #expect(try await db.query("SELECT state FROM wa_outbox.jobs WHERE id = \(running)")[0].decode(String.self, at: 0) == "queued")
        #expect(try await db.query("SELECT count(*) FROM wa_outbox.lanes WHERE busy OR run_left > 0")[0].decode(Int.self, at: 0) == 0)
        #expect(try await db.query("SELECT in_flight::int8 FROM wa_outbox.sessions")[0].decode(Int.self, at: 0) == 0)
        await db.close()
    }
}
