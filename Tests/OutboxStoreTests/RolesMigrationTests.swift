import Foundation
import OutboxStore
import PostgresClient
import Testing
import TestSupport

/// migrations/0014: the roles are cluster-wide while migrations run per database, often in several
/// databases of one cluster at once (as this test suite does); every table is granted to the roles
/// that need it, so a table added later without grants fails here.
@Suite("Migrations: the least-privilege roles")
struct RolesMigrationTests {
    static func migrations() throws -> [Migration] { try Migration.load(directory: TestEnvironment.migrationsDirectory) }

    /// 0014 with role names of this test's own, applied to four databases at once, each in one
    /// transaction as the migrator applies it: all four commit, each role exists once, and each
    /// database has its grants.
    @Test func databasesMigratingAtOnceCreateEachRoleOnceAndAllCommit() async throws {
        let all = try Self.migrations()
        let before = Migrator(migrations: all.filter { $0.version < 14 }, logger: TestEnvironment.logger)
        let roles = try #require(all.first { $0.version == 14 })
        let tag = "wa_t" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(8).lowercased()
        // Only the role names change: `wa_outbox_api` and so on become `<tag>_api`.
        let sql = ["api", "worker", "operator"].reduce(roles.sql) { $0.replacingOccurrences(of: "wa_outbox_\($1)", with: "\(tag)_\($1)") }
        var urls: [String] = []
        for _ in 0..<4 {
            let url = try await TestEnvironment.freshDatabase(prefix: "roles")
            let database = PostgresDatabase(configuration: PostgresConfiguration(url), maxConnections: 1, logger: TestEnvironment.logger)
            try await before.migrate(database)
            await database.close()
            urls.append(url)
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for url in urls {
                group.addTask {
                    let connection = try await PostgresConnection.connect(PostgresConfiguration(url), logger: TestEnvironment.logger)
                    do {
                        try await connection.execute("BEGIN;\n" + sql + "\nCOMMIT;")
                    } catch {
                        await connection.close()
                        throw error
                    }
                    await connection.close()
                }
            }
            try await group.waitForAll()
        }
        for url in urls {
            let database = PostgresDatabase(configuration: PostgresConfiguration(url), maxConnections: 1, logger: TestEnvironment.logger)
            let rows = try await database.query("""
                SELECT (SELECT count(*) FROM pg_roles WHERE rolname LIKE \(tag + "\\_%") AND NOT rolcanlogin),
                       has_table_privilege(\(tag + "_api"), 'wa_outbox.jobs', 'INSERT'),
                       has_table_privilege(\(tag + "_api"), 'wa_outbox.jobs', 'DELETE'),
                       has_table_privilege(\(tag + "_worker"), 'wa_outbox.api_keys', 'SELECT'),
                       has_table_privilege(\(tag + "_operator"), 'wa_outbox.api_keys', 'INSERT')
                """)
            #expect(try rows[0].decode(Int.self, at: 0) == 3)
            #expect(try rows[0].decode(Bool.self, at: 1) && !rows[0].decode(Bool.self, at: 2))
            #expect(try !rows[0].decode(Bool.self, at: 3) && rows[0].decode(Bool.self, at: 4))
            await database.close()
        }
    }

    /// Every table of the schema, and what each role may do with it. A migration that adds a table
    /// grants it in `wa_outbox.grant_roles()` (and this list says what it should be).
    @Test func everyTableHasTheGrantsItsRolesNeed() async throws {
        let url = try await TestEnvironment.freshDatabase(prefix: "grants")
        let database = PostgresDatabase(configuration: PostgresConfiguration(url), maxConnections: 1, logger: TestEnvironment.logger)
        try await Migrator(migrations: try Self.migrations(), logger: TestEnvironment.logger).migrate(database)
        let rows = try await database.query("""
            SELECT t.tablename::text, r.role,
                   string_agg(p.privilege, ',' ORDER BY p.privilege) FILTER (WHERE has_table_privilege(r.role, 'wa_outbox.' || t.tablename, p.privilege))
            FROM pg_tables t
            CROSS JOIN (VALUES ('wa_outbox_api'), ('wa_outbox_worker'), ('wa_outbox_operator')) r(role)
            CROSS JOIN (VALUES ('DELETE'), ('INSERT'), ('SELECT'), ('TRUNCATE'), ('UPDATE')) p(privilege)
            WHERE t.schemaname = 'wa_outbox'
            GROUP BY 1, 2 ORDER BY 1, 2
            """)
        var granted: [String: String] = [:]
        for row in rows { granted["\(try row.decode(String.self, at: 0)) \(try row.decode(String.self, at: 1))"] = try row.decode(String?.self, at: 2) ?? "" }
        let all = "DELETE,INSERT,SELECT,UPDATE"
        let expected: [String: String] = [
            "api_keys wa_outbox_api": "SELECT", "api_keys wa_outbox_operator": all, "api_keys wa_outbox_worker": "",
            "audit wa_outbox_api": "INSERT,SELECT", "audit wa_outbox_operator": all, "audit wa_outbox_worker": "DELETE,INSERT,SELECT",
            "console_logins wa_outbox_api": all, "console_logins wa_outbox_operator": all, "console_logins wa_outbox_worker": all,
            "events wa_outbox_api": "INSERT,SELECT", "events wa_outbox_operator": all, "events wa_outbox_worker": "DELETE,INSERT,SELECT",
            "jobs wa_outbox_api": "INSERT,SELECT", "jobs wa_outbox_operator": all, "jobs wa_outbox_worker": "DELETE,SELECT,UPDATE",
            "lanes wa_outbox_api": "INSERT,SELECT,UPDATE", "lanes wa_outbox_operator": all, "lanes wa_outbox_worker": all,
            "receipts_pending wa_outbox_api": "", "receipts_pending wa_outbox_operator": all, "receipts_pending wa_outbox_worker": all,
            "schema_migrations wa_outbox_api": "SELECT", "schema_migrations wa_outbox_operator": "SELECT", "schema_migrations wa_outbox_worker": "SELECT",
            "sessions wa_outbox_api": "SELECT", "sessions wa_outbox_operator": all, "sessions wa_outbox_worker": "SELECT,UPDATE",
            "workers wa_outbox_api": all, "workers wa_outbox_operator": all, "workers wa_outbox_worker": all,
        ]
        #expect(granted == expected)
        // The API may stamp a key's last use, and nothing else of it.
        let column = try await database.query("""
            SELECT has_column_privilege('wa_outbox_api', 'wa_outbox.api_keys', 'last_used_at', 'UPDATE'),
                   has_column_privilege('wa_outbox_api', 'wa_outbox.api_keys', 'revoked_at', 'UPDATE')
            """)
        #expect(try column[0].decode(Bool.self, at: 0) && !column[0].decode(Bool.self, at: 1))
        // It claims and completes its own synchronous sends (migration 0020): the claim's and the
        // completion's columns of a job and a session, never what a job says or a session's limits.
        let dispatch = try await database.query("""
            SELECT c.tablename, c.column_name, has_column_privilege('wa_outbox_api', 'wa_outbox.' || c.tablename, c.column_name, 'UPDATE')
            FROM (VALUES ('jobs', 'state'), ('jobs', 'claim_token'), ('jobs', 'finished_at'), ('sessions', 'in_flight'), ('sessions', 'not_before'),
                         ('jobs', 'payload'), ('jobs', 'org'), ('jobs', 'session_id'), ('jobs', 'chat'), ('sessions', 'max_in_flight'),
                         ('sessions', 'engine'), ('sessions', 'org')) c(tablename, column_name)
            """)
        let updatable = Set(try dispatch.filter { try $0.decode(Bool.self, at: 2) }.map { "\(try $0.decode(String.self, at: 0)).\(try $0.decode(String.self, at: 1))" })
        #expect(updatable == ["jobs.state", "jobs.claim_token", "jobs.finished_at", "sessions.in_flight", "sessions.not_before"])
        await database.close()
    }
}
