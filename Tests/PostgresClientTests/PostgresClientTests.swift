import Foundation
import ConnectionKit
import Logging
import NIOConcurrencyHelpers
@testable import PostgresClient
import Synchronization
import Testing
import TestSupport

@Suite("PostgreSQL client against a real server")
struct PostgresClientTests {
    func connect() async throws -> PostgresConnection {
        try await PostgresConnection.connect(PostgresConfiguration(try TestEnvironment.databaseURL()), logger: TestEnvironment.logger)
    }

    /// Sends `value` as a parameter, has the server cast it to `type` and send it back.
    func roundTrip<T: PostgresCodable>(_ value: T, as type: String, on connection: PostgresConnection) async throws -> T {
        let rows = try await connection.query(PostgresQuery("SELECT $1::\(type)", binds: [value.postgresBind]))
        return try rows[0].decode(T.self, at: 0)
    }

    @Test func everySupportedTypeRoundTrips() async throws {
        let connection = try await connect()
        defer { Task { await connection.close() } }
        let unicode = "héllo, мир, 你好, 👋🏽, ∑≠"
        #expect(try await roundTrip(unicode, as: "text", on: connection) == unicode)
        #expect(try await roundTrip(Int16.min, as: "int2", on: connection) == Int16.min)
        #expect(try await roundTrip(Int32.max, as: "int4", on: connection) == Int32.max)
        #expect(try await roundTrip(Int64.min, as: "int8", on: connection) == Int64.min)
        #expect(try await roundTrip(true, as: "bool", on: connection) == true)
        #expect(try await roundTrip(false, as: "bool", on: connection) == false)
        #expect(try await roundTrip(-1.5e300, as: "float8", on: connection) == -1.5e300)
        for numeric in ["0", "-0.000100", "12345678901234567890.123456789", "1e-5", "NaN", "10000", "-99999.5"] {
            let expected = try await connection.query("SELECT (\(numeric)::text)::numeric::text")[0].decode(String.self, at: 0)
            #expect(try await roundTrip(PostgresNumeric(numeric), as: "numeric", on: connection).text == expected)
        }
        let date = Date(timeIntervalSince1970: 1_795_000_000.123456)
        let decodedDate = try await roundTrip(date, as: "timestamptz", on: connection)
        #expect(abs(decodedDate.timeIntervalSince(date)) < 0.000_001)
        let json = PostgresJSONB(#"{"a": [1, "ü", null], "b": {"c": true}}"#)
        let decodedJSON = try await roundTrip(json, as: "jsonb", on: connection)
        #expect(try decodedJSON.decode([String: AnyCodableValue].self) == json.decode([String: AnyCodableValue].self))
        let bytes = PostgresBytes((0...255).map(UInt8.init))
        #expect(try await roundTrip(bytes, as: "bytea", on: connection) == bytes)
        let uuid = UUID()
        #expect(try await roundTrip(uuid, as: "uuid", on: connection) == uuid)
        #expect(try await roundTrip(["a", "", "ü,\"{}", "NULL"], as: "text[]", on: connection) == ["a", "", "ü,\"{}", "NULL"])
        #expect(try await roundTrip([Int64.max, 0, -1], as: "int8[]", on: connection) == [Int64.max, 0, -1])
        #expect(try await roundTrip([String](), as: "text[]", on: connection) == [])
        let withNulls: [String?] = ["x", nil, "z"]
        let rows = try await connection.query("SELECT \(withNulls)::text[]")
        #expect(try rows[0].decode([String?].self, at: 0) == withNulls)
    }

    @Test func nullRoundTripsForEveryType() async throws {
        let connection = try await connect()
        defer { Task { await connection.close() } }
        let rows = try await connection.query("""
            SELECT \(String?.none), \(Int64?.none), \(Int32?.none), \(Int16?.none), \(Bool?.none), \(Double?.none),
                   \(Date?.none), \(UUID?.none), \(PostgresBytes?.none), \(PostgresJSONB?.none), \(PostgresNumeric?.none)
            """)
        let row = rows[0]
        #expect(try row.decode(String?.self, at: 0) == nil)
        #expect(try row.decode(Int64?.self, at: 1) == nil)
        #expect(try row.decode(Int32?.self, at: 2) == nil)
        #expect(try row.decode(Int16?.self, at: 3) == nil)
        #expect(try row.decode(Bool?.self, at: 4) == nil)
        #expect(try row.decode(Double?.self, at: 5) == nil)
        #expect(try row.decode(Date?.self, at: 6) == nil)
        #expect(try row.decode(UUID?.self, at: 7) == nil)
        #expect(try row.decode(PostgresBytes?.self, at: 8) == nil)
        #expect(try row.decode(PostgresJSONB?.self, at: 9) == nil)
        #expect(try row.decode(PostgresNumeric?.self, at: 10) == nil)
        #expect(throws: PostgresError.self) { try row.decode(String.self, at: 0) }
    }

    @Test func oneMegabyteValuesRoundTrip() async throws {
        let connection = try await connect()
        defer { Task { await connection.close() } }
        let text = String(repeating: "ü漢👋", count: 1_048_576 / 9 + 1)
        #expect(try await roundTrip(text, as: "text", on: connection) == text)
        var generator = SystemRandomNumberGenerator()
        let bytes = PostgresBytes((0..<1_048_576).map { _ in UInt8.random(in: 0...255, using: &generator) })
        #expect(try await roundTrip(bytes, as: "bytea", on: connection) == bytes)
    }

    @Test func failingStatementInTransactionRollsBackAndConnectionStaysUsable() async throws {
        let connection = try await connect()
        defer { Task { await connection.close() } }
        try await connection.execute("CREATE TEMP TABLE rollback_probe (id int PRIMARY KEY)")
        await #expect(throws: PostgresError.self) {
            try await connection.withTransaction { connection in
                try await connection.query("INSERT INTO rollback_probe VALUES (1)")
                try await connection.query("SELECT 1 / \(0)")
            }
        }
        let count = try await connection.query("SELECT count(*) FROM rollback_probe")[0].decode(Int.self, at: 0)
        #expect(count == 0)
        #expect(try await connection.query("SELECT \(41) + 1")[0].decode(Int.self, at: 0) == 42)
        #expect(connection.isBroken == false)
    }

    /// A pipeline's statements run in order in one round trip, each with its own result; one that
    /// fails skips the rest, its error is thrown, and after a ROLLBACK the connection goes on.
    @Test func aPipelineRunsItsStatementsInOrderAndStopsAtTheFirstFailure() async throws {
        let connection = try await connect()
        defer { Task { await connection.close() } }
        try await connection.execute("CREATE TEMP TABLE pipeline_probe (id int PRIMARY KEY)")
        let rows = try await connection.pipeline([.begin, "INSERT INTO pipeline_probe VALUES (\(1)) RETURNING id",
                                                  "SELECT count(*) FROM pipeline_probe", .commit])
        #expect(rows.count == 4)
        #expect(try rows[1][0].decode(Int.self, at: 0) == 1 && rows[2][0].decode(Int.self, at: 0) == 1)

        await #expect(throws: PostgresError.self) {
            _ = try await connection.pipeline([.begin, "INSERT INTO pipeline_probe VALUES (\(2))", "SELECT 1 / \(0)",
                                               "INSERT INTO pipeline_probe VALUES (\(3))", .commit])
        }
        // The block is open and failed, as after any failed statement in it.
        await #expect(throws: PostgresError.self) { try await connection.query("SELECT \(1)") }
        try await connection.execute("ROLLBACK")
        #expect(try await connection.query("SELECT array_agg(id ORDER BY id)::text FROM pipeline_probe")[0].decode(String.self, at: 0) == "{1}")
        #expect(try await connection.query("SELECT \(41) + 1")[0].decode(Int.self, at: 0) == 42)
        #expect(connection.isBroken == false)
    }

    /// A connection keeps its plans until its generation is renewed, however long that takes,
    /// and then remakes them once; one without a generation keeps them for its life.
    @Test func plansAreRemadeOnlyWhenTheirGenerationIsRenewed() async throws {
        let plans = PlanGeneration()
        let url = try TestEnvironment.databaseURL()
        let connection = try await PostgresConnection.connect(PostgresConfiguration(url), plans: plans, logger: TestEnvironment.logger)
        let alone = try await connect()
        defer { Task { await connection.close(); await alone.close() } }
        for _ in 0..<3 {
            try await connection.query("SELECT \(1)")
            try await Task.sleep(for: .milliseconds(600))
        }
        #expect(connection.planRenewals == 0)
        plans.renew()
        plans.renew()
        try await connection.query("SELECT \(1)")
        try await connection.query("SELECT \(1)")
        #expect(connection.planRenewals == 1)
        try await alone.query("SELECT \(1)")
        #expect(alone.planRenewals == 0)

        // A pool's connections share its generation.
        let database = PostgresDatabase(configuration: PostgresConfiguration(url), maxConnections: 1, logger: TestEnvironment.logger)
        try await database.query("SELECT \(1)")
        database.renewPlans()
        try await database.query("SELECT \(1)")
        #expect(try await database.withConnection { $0.planRenewals } == 1)
        await database.close()
    }

    /// A connection that holds as many prepared statements as it may still runs a statement on its
    /// generic plan's path (unnamed, as `query` does) instead of failing.
    @Test func aStatementOnItsGenericPlanRunsOnAConnectionFullOfPreparedStatements() async throws {
        let connection = try await connect()
        defer { Task { await connection.close() } }
        for i in 0..<300 { try await connection.query(PostgresQuery("SELECT \(i) AS distinct_statement", binds: [])) }
        let rows = try await connection.queryGenericPlan("SELECT \(41) + 1")
        #expect(try rows[0].decode(Int.self, at: 0) == 42)
        #expect(connection.isReusable)
    }

    /// A statement run on its generic plan commits on its own, and one that fails leaves no
    /// transaction open behind it; inside a caller's transaction it is part of that transaction.
    @Test func aStatementOnItsGenericPlanIsATransactionOfItsOwn() async throws {
        let connection = try await connect()
        defer { Task { await connection.close() } }
        try await connection.execute("CREATE TEMP TABLE generic_probe (id int PRIMARY KEY)")
        let rows = try await connection.queryGenericPlan("INSERT INTO generic_probe VALUES (\(1)) RETURNING id")
        #expect(try rows[0].decode(Int.self, at: 0) == 1)
        #expect(connection.isReusable)
        await #expect(throws: PostgresError.self) { try await connection.queryGenericPlan("INSERT INTO generic_probe VALUES (\(1))") }
        #expect(connection.isReusable, "a failed statement left its transaction open")
        #expect(try await connection.query("SELECT current_setting('plan_cache_mode')")[0].decode(String.self, at: 0) == "auto")
        try await connection.execute("BEGIN")
        try await connection.queryGenericPlan("INSERT INTO generic_probe VALUES (\(2))")
        try await connection.execute("ROLLBACK")
        #expect(try await connection.query("SELECT array_agg(id ORDER BY id)::text FROM generic_probe")[0].decode(String.self, at: 0) == "{1}")
    }

    /// A connection given back to the pool inside a transaction block is not lent again: the next
    /// user would run inside someone else's transaction (or a failed one). It is closed, alone.
    @Test func aConnectionGivenBackInsideATransactionIsNotLentAgain() async throws {
        let database = PostgresDatabase(configuration: PostgresConfiguration(try TestEnvironment.databaseURL()), maxConnections: 1,
                                        logger: TestEnvironment.logger)
        defer { Task { await database.close() } }
        let first = try await database.withConnection { connection in
            try await connection.pipeline([.begin, "SET LOCAL statement_timeout = '1234ms'", "SELECT pg_backend_pid()"])[2][0].decode(Int.self, at: 0)
        }
        let (pid, timeout) = try await database.withConnection { connection in
            let row = try await connection.query("SELECT pg_backend_pid(), current_setting('statement_timeout')")[0]
            return (try row.decode(Int.self, at: 0), try row.decode(String.self, at: 1))
        }
        #expect(pid != first && timeout != "1234ms")
        // A connection given back idle is lent again.
        let again = try await database.withConnection { try await $0.query("SELECT pg_backend_pid()")[0].decode(Int.self, at: 0) }
        #expect(again == pid)
    }

    /// A server WARNING reaches the connection's logger, with its severity and SQLSTATE, instead
    /// of libpq's default of printing it raw to stderr.
    @Test func serverNoticesGoToTheLogger() async throws {
        let records = NIOLockedValueBox<[(Logger.Level, String, String)]>([])
        let logger = Logger(label: "notices") { _ in CapturingLogHandler(records: records) }
        let connection = try await PostgresConnection.connect(PostgresConfiguration(try TestEnvironment.databaseURL()), logger: logger)
        try await connection.query("DO $$ BEGIN RAISE WARNING 'disk is getting full' USING ERRCODE = '01000'; END $$")
        // Below WARNING the server sends nothing (the configuration sets client_min_messages).
        try await connection.query("DROP TABLE IF EXISTS wa_outbox_no_such_table")
        let seen = records.withLockedValue { $0 }
        #expect(seen.count == 1)
        #expect(seen.first?.0 == .warning)
        #expect(seen.first?.1 == "postgres: disk is getting full")
        #expect(seen.first?.2 == "01000")
        await connection.close()
    }

    @Test func uniqueViolationReportsSQLState() async throws {
        let connection = try await connect()
        defer { Task { await connection.close() } }
        try await connection.execute("CREATE TEMP TABLE unique_probe (id int PRIMARY KEY)")
        try await connection.query("INSERT INTO unique_probe VALUES (\(7))")
        do {
            try await connection.query("INSERT INTO unique_probe VALUES (\(7))")
            Issue.record("expected a unique violation")
        } catch let error as PostgresError {
            #expect(error.kind == .server)
            #expect(error.sqlState == PostgresError.uniqueViolation)
            #expect(error.message.contains("unique"))
            #expect(error.detail?.contains("(id)=(7)") == true)
        }
    }

    @Test func listenReceivesNotifyPromptlyWithoutBusyPolling() async throws {
        let configuration = PostgresConfiguration(try TestEnvironment.databaseURL())
        let listener = PostgresListener(configuration: configuration, channels: ["probe_channel"], idleCheck: .seconds(30), logger: TestEnvironment.logger)
        var events = listener.events().makeAsyncIterator()
        #expect(await events.next() == .subscribed)

        // Idle for a second: the thread sleeps in poll(2) and returns at most once.
        let before = listener.wakeups.load(ordering: .relaxed)
        try await Task.sleep(for: .seconds(1))
        #expect(listener.wakeups.load(ordering: .relaxed) - before <= 1)

        let sender = try await connect()
        defer { Task { await sender.close() } }
        let clock = ContinuousClock()
        let start = clock.now
        try await sender.query("SELECT pg_notify('probe_channel', \("hello"))")
        let event = await events.next()
        let elapsed = clock.now - start
        guard case .notification(let notification) = event else {
            Issue.record("expected a notification, got \(String(describing: event))")
            return
        }
        #expect(notification.channel == "probe_channel")
        #expect(notification.payload == "hello")
        // Delivered by the notification itself (well under 100 ms when the machine is idle): a
        // liveness bound, not a speed target, below the listener's only timer (its 15 s idle
        // check); CI's loaded machine has stalled a test's tasks for 9 s, so 5 s, not 1.
        #expect(elapsed < .seconds(5))
        listener.stop()
    }

    @Test func sixtyFourTasksShareAPoolOfFour() async throws {
        let database = PostgresDatabase(configuration: PostgresConfiguration(try TestEnvironment.databaseURL()), maxConnections: 4, logger: TestEnvironment.logger)
        let total = 10_000
        let tasks = 64
        let correct = try await withThrowingTaskGroup(of: Int.self) { group in
            for task in 0..<tasks {
                group.addTask {
                    var correct = 0
                    for index in stride(from: task, to: total, by: tasks) {
                        let value = Int64(index)
                        let rows = try await database.query("SELECT \(value) * 2, \(String(index))")
                        if try rows[0].decode(Int64.self, at: 0) == value * 2, try rows[0].decode(String.self, at: 1) == String(index) {
                            correct += 1
                        }
                    }
                    return correct
                }
            }
            return try await group.reduce(0, +)
        }
        #expect(correct == total)
        #expect(await database.pool.openConnections <= 4)
        await database.close()
    }

    @Test func serverRestartIsReportedAndTheNextCallSucceeds() async throws {
        let server = try await PrivateServer.start(.postgres)
        let database = PostgresDatabase(configuration: PostgresConfiguration(server.url), maxConnections: 2, logger: TestEnvironment.logger)
        // Open both connections so both are stale after the restart.
        async let a = database.query("SELECT pg_sleep(0.1)")
        async let b = database.query("SELECT pg_sleep(0.1)")
        _ = try await (a, b)
        try await server.restart()
        do {
            try await database.query("SELECT 1")
            Issue.record("expected the first call after a restart to fail")
        } catch let error as PostgresError {
            #expect(error.kind == .connection)
        }
        #expect(try await database.query("SELECT \(5)")[0].decode(Int.self, at: 0) == 5)
        await database.close()
        await server.destroy()
    }
}

/// Any JSON value, for comparing JSON documents structurally.
enum AnyCodableValue: Codable, Equatable {
    case null, bool(Bool), number(Double), string(String), array([AnyCodableValue]), object([String: AnyCodableValue])
    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let value = try? container.decode(Bool.self) { self = .bool(value) }
        else if let value = try? container.decode(Double.self) { self = .number(value) }
        else if let value = try? container.decode(String.self) { self = .string(value) }
        else if let value = try? container.decode([AnyCodableValue].self) { self = .array(value) }
        else { self = .object(try container.decode([String: AnyCodableValue].self)) }
    }
    func encode(to encoder: any Encoder) throws {}
}

/// Keeps each record's level, message and `postgres.sqlstate`.
struct CapturingLogHandler: LogHandler {
    let records: NIOLockedValueBox<[(Logger.Level, String, String)]>
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String, file: String, function: String, line: UInt) {
        let sqlState = metadata?["postgres.sqlstate"].map { "\($0)" } ?? ""
        records.withLockedValue { $0.append((level, "\(message)", sqlState)) }
    }
}
