import Foundation
import OutboxStore
import PostgresClient
import Simulator
import Testing
import TestSupport

/// The worker and the API as deployed with least privilege: each connects as a login that is a
/// member of its role only (`wa_outbox_worker`, `wa_outbox_api`, migrations/0014), and an operator's
/// CLI as a member of `wa_outbox_operator`. Sends, sync and async, their events on the stream,
/// a cancel, a session change and a replay all go through end to end; what a role was not granted
/// is refused by PostgreSQL.
@Suite("Least privilege: the worker and the API under their roles")
struct LeastPrivilegeTests {
    /// Logins for the three roles on the stream server (where LiveGateway's databases live),
    /// after a migration there has created the roles.
    static func logins(passwords: [String: String] = [:]) async throws -> [String: RoleLogin] {
        let url = try await TestEnvironment.freshStreamDatabase(prefix: "roles")
        let database = PostgresDatabase(configuration: PostgresConfiguration(url), maxConnections: 1, logger: TestEnvironment.logger)
        try await Migrator(migrations: try Migration.load(directory: TestEnvironment.migrationsDirectory), logger: TestEnvironment.logger).migrate(database)
        await database.close()
        var logins: [String: RoleLogin] = [:]
        for role in ["api", "worker", "operator"] { logins[role] = try await RoleLogin.make(role, on: url, password: passwords[role]) }
        return logins
    }

    /// The SQLSTATE `sql` fails with as `login`, or nil if it runs.
    static func refusal(_ login: RoleLogin, _ url: String, _ sql: String) async throws -> String? {
        let connection = try await PostgresConnection.connect(PostgresConfiguration(login.url(url)), logger: TestEnvironment.logger)
        do {
            try await connection.execute(sql)
            await connection.close()
            return nil
        } catch let error as PostgresError {
            await connection.close()
            return error.sqlState ?? "\(error)"
        }
    }

    static func body(_ text: String) -> String {
        #"{"type":"text","chat":"4915112345678@s.whatsapp.net","text":"\#(text)"}"#
    }

    @Test func sendsEventsAndAReplayGoThroughUnderTheRoles() async throws {
        let logins = try await Self.logins()
        let (api, worker, operatorLogin) = (logins["api"]!, logins["worker"]!, logins["operator"]!)
        try await LiveGateway.run(apis: 1, workers: 1, sessions: [(org: "org1", id: "s1"), (org: "org1", id: "s2")],
                                  logins: (worker: worker, api: api)) { gateway in
            let cli = try TestEnvironment.executable()
            let operatorURL = operatorLogin.url(gateway.url)
            func operate(_ arguments: String...) async throws -> Subprocess.Result {
                let result = try await Subprocess.run(cli, arguments + ["--database-url", operatorURL])
                #expect(result.status == 0, "\(arguments) as the operator: \(result.output)")
                return result
            }
            let key = try await operate("apikeys", "create", "--org", "org1", "--name", "roles", "--permissions", "send,read")
                .output.trimmingCharacters(in: .whitespacesAndNewlines)
            let port = gateway.ports[0]
            let headers = [("Authorization", "Bearer \(key)"), ("Content-Type", "application/json")]
            for i in 0..<10 {
                let sent = try await request(port: port, method: "POST", "/api/v1/sessions/s1/messages?async=true", headers: headers, body: Self.body("async \(i)"))
                #expect(sent.status == 202, "\(sent.body)")
            }
            for i in 0..<3 {
                let sent = try await request(port: port, method: "POST", "/api/v1/sessions/s1/messages", headers: headers, body: Self.body("sync \(i)"),
                                             timeout: .seconds(60))
                #expect(sent.status == 200 && sent.body.contains(#""status":"sent""#), "\(sent.body)")
            }
            let stream = try await readStream(port: port, path: "/api/v1/events?after=0", headers: [("Authorization", "Bearer \(key)")],
                                              timeout: .seconds(120)) { messages in
                messages.filter { $0.data?.contains(#""status":"sent""#) == true }.count >= 13
            }
            #expect(stream.status == 200 && stream.messages.filter { $0.data?.contains(#""status":"sent""#) == true }.count == 13)

            // An operator pauses s2, cancels what was queued there, resumes it and replays.
            _ = try await operate("sessions", "set", "--id", "s2", "--org", "org1", "--state", "paused", "--reason", "roles test")
            let queued = try await request(port: port, method: "POST", "/api/v1/sessions/s2/messages?async=true", headers: headers, body: Self.body("later"))
            #expect(queued.status == 202)
            _ = try await operate("jobs", "cancel", "--session", "s2", "--reason", "roles test")
            #expect(try await gateway.count("SELECT count(*) FROM wa_outbox.jobs WHERE session_id = 's2' AND state = 'canceled'") == 1)
            _ = try await operate("sessions", "set", "--id", "s2", "--org", "org1", "--state", "active")
            _ = try await operate("jobs", "replay", "--session", "s2", "--reason", "roles test")
            let deadline = ContinuousClock.now + .seconds(120)
            while try await gateway.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'") < 14, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(try await gateway.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'") == 14)
            #expect(try await gateway.count("SELECT count(*) FROM wa_outbox.audit WHERE action IN ('cancel', 'replay')") == 2)
            #expect(try await gateway.simulator.stats().delivered == 14)

            // What each role was not granted.
            let url = gateway.url
            for sql in ["DELETE FROM wa_outbox.jobs", "UPDATE wa_outbox.jobs SET payload = payload", "UPDATE wa_outbox.jobs SET org = org", "TRUNCATE wa_outbox.events",
                        "UPDATE wa_outbox.sessions SET max_in_flight = 9", "INSERT INTO wa_outbox.api_keys (org) VALUES ('x')",
                        "ALTER TABLE wa_outbox.jobs ADD COLUMN x int", "CREATE TABLE wa_outbox.x (a int)", "DROP TABLE wa_outbox.lanes",
                        "CREATE FUNCTION wa_outbox.f() RETURNS int LANGUAGE sql AS 'SELECT 1'"] {
                #expect(try await Self.refusal(api, url, sql) == "42501", "the API role ran \(sql)")
            }
            for sql in ["SELECT count(*) FROM wa_outbox.api_keys", "INSERT INTO wa_outbox.jobs (org) VALUES ('x')", "DELETE FROM wa_outbox.sessions",
                        "ALTER TABLE wa_outbox.jobs ADD COLUMN x int", "CREATE TABLE wa_outbox.x (a int)", "TRUNCATE wa_outbox.jobs"] {
                #expect(try await Self.refusal(worker, url, sql) == "42501", "the worker role ran \(sql)")
            }
            for sql in ["ALTER TABLE wa_outbox.jobs ADD COLUMN x int", "CREATE TABLE wa_outbox.x (a int)", "DROP TABLE wa_outbox.events",
                        "TRUNCATE wa_outbox.jobs", "DELETE FROM wa_outbox.schema_migrations"] {
                #expect(try await Self.refusal(operatorLogin, url, sql) == "42501", "the operator role ran \(sql)")
            }
            // And what they were: the refusals above are about privileges, not broken logins.
            #expect(try await Self.refusal(api, url, "SELECT count(*) FROM wa_outbox.jobs") == nil)
            #expect(try await Self.refusal(worker, url, "SELECT count(*) FROM wa_outbox.workers") == nil)
            #expect(try await Self.refusal(operatorLogin, url, "SELECT count(*) FROM wa_outbox.api_keys") == nil)
            #expect(try await gateway.count("SELECT count(*) FROM wa_outbox.jobs") == 14, "the refused statements changed nothing")
        }
    }
}
