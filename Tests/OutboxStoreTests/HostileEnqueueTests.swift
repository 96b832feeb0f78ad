import Foundation
import OutboxCore
import OutboxStore
import PostgresClient
import PropertyBased
import Testing
import TestSupport

/// Hostile payloads (`HostileInput`) against `wa_outbox.enqueue` called as any language calls it,
/// in SQL, and through the Swift library (`Outbox.enqueue`). Every one is refused: by the
/// function's own validation (SQLSTATE WA400) when PostgreSQL can read it as jsonb at all, and
/// otherwise by jsonb's input before the function runs (invalid JSON, NUL, bad UTF-8, nesting
/// past the parser's stack). Nothing is stored: the job, event and lane counts stay as they were,
/// and a well-formed send afterwards is queued as usual.
@Suite("Hostile input: the SQL enqueue function and the Swift library")
struct HostileEnqueueTests {
    static let sqlCases = 4_000
    static let libraryCases = 1_500
    static let verbatimCases = 300

    /// PostgreSQL's refusals of what is not jsonb, before the function runs.
    static let unreadable: Set<String> = ["22P02", "22P05", "22021", "22003", "54001"]

    static let hostile: Generator<HostilePayload, Shrink.None<HostilePayload>> = Generator { rng in
        var seeded = SplitMix64(seed: rng.next())
        return HostileInput.payload(using: &seeded)
    }

    @Test func theSQLFunctionRefusesEveryHostilePayloadAndStoresNothing() async throws {
        let store = try await HostileStore.make()
        let before = try await store.counts()
        var run = 0
        var byCategory: [String: Int] = [:]
        await propertyCheck(count: Self.sqlCases, input: Self.hostile) { payload async throws in
            run += 1
            byCategory[payload.category, default: 0] += 1
            let state = await store.enqueueSQL(payload)
            if payload.parsesAsJSONB {
                #expect(state == "WA400", "\(payload)")
            } else {
                #expect(state.map(Self.unreadable.contains) == true, "\(payload): \(state ?? "accepted")")
            }
            #expect(try await store.counts() == before, "\(payload) changed the tables")
        }
        print("hostile-input cases: SQL enqueue function \(run) \(byCategory.sorted { $0.key < $1.key })")
        #expect(run == Self.sqlCases)
        #expect(Set(byCategory.keys) == Set(HostileInput.categoryNames), "every category was drawn")
        try await store.expectAWellFormedSendStillWorks(after: before)
        await store.close()
    }

    @Test func theSwiftLibraryAnswersValidationErrorForEveryHostilePayload() async throws {
        let store = try await HostileStore.make()
        let before = try await store.counts()
        var run = 0
        await propertyCheck(count: Self.libraryCases, input: Self.hostile) { payload async throws in
            run += 1
            // A Swift String cannot hold invalid UTF-8: those bytes reach the library repaired, so
            // the request fields carry this case instead (below).
            let request = payload.bytes == nil
                ? EnqueueRequest(org: "org1", session: "s1", kind: JobKind(rawValue: payload.kind.rawValue)!, payload: payload.json)
                : HostileStore.hostileFields(payload.json.utf8.count)
            do {
                let result = try await Outbox.enqueue(request, in: store.database)
                Issue.record("accepted \(payload): \(result)")
            } catch let error as OutboxError {
                #expect(error.code == .validationError, "\(payload): \(error)")
            } catch {
                Issue.record("\(payload): \(error)")
            }
            #expect(try await store.counts() == before, "\(payload) changed the tables")
        }
        for index in 0..<HostileStore.fieldCases {
            await #expect(throws: OutboxError.self) { try await Outbox.enqueue(HostileStore.hostileFields(index), in: store.database) }
            run += 1
        }
        print("hostile-input cases: Swift library enqueue \(run)")
        #expect(run == Self.libraryCases + HostileStore.fieldCases)
        try await store.expectAWellFormedSendStillWorks(after: before)
        await store.close()
    }

    /// SQL metacharacters in a message's text are text: stored and read back byte for byte, and
    /// nothing else happens (the tables are all still there).
    @Test func sqlMetacharactersInATextAreStoredVerbatim() async throws {
        let store = try await HostileStore.make()
        let tablesBefore = try await store.database.query("SELECT count(*) FROM pg_tables WHERE schemaname = 'wa_outbox'")[0].decode(Int.self, at: 0)
        let alphabet = HostileInput.metacharacters + ["hello", " ", "\n", "ü", "🙂"]
        let pieces: Generator<[String], Shrink.None<[String]>> = Generator { rng in
            var seeded = SplitMix64(seed: rng.next())
            return (0..<Int.random(in: 1...12, using: &seeded)).map { _ in alphabet.randomElement(using: &seeded)! }
        }
        var run = 0
        await propertyCheck(count: Self.verbatimCases, input: pieces) { parts async throws in
            run += 1
            let text = "x" + parts.joined()
            let payload = String(decoding: try JSONSerialization.data(withJSONObject: ["type": "text", "chat": HostileInput.goodChat, "text": text]), as: UTF8.self)
            let result = try await Outbox.enqueue(EnqueueRequest(org: "org1", session: "s1", kind: .send, payload: payload), in: store.database)
            let stored = try await store.database.query("SELECT payload->>'text' FROM wa_outbox.jobs WHERE id = \(Int64(result.outboxId)!)")
            #expect(try stored[0].decode(String.self, at: 0) == text)
        }
        let tables = try await store.database.query("SELECT count(*) FROM pg_tables WHERE schemaname = 'wa_outbox'")[0].decode(Int.self, at: 0)
        #expect(tables == tablesBefore && tables >= 9, "the outbox's tables are all still there")
        #expect(try await store.counts()[0] == Self.verbatimCases)
        print("hostile-input cases: SQL metacharacters stored verbatim \(run)")
        await store.close()
    }
}

/// A migrated database of one test with session s1 of org1.
struct HostileStore {
    let database: PostgresDatabase

    static func make() async throws -> HostileStore {
        let url = try await TestEnvironment.freshDatabase(prefix: "hostile")
        let database = PostgresDatabase(configuration: PostgresConfiguration(url), maxConnections: 2, logger: TestEnvironment.logger)
        try await Migrator(migrations: try Migration.load(directory: TestEnvironment.migrationsDirectory), logger: TestEnvironment.logger).migrate(database)
        try await SessionRegistry.upsert(SessionRecord(id: "s1", org: "org1", engine: "sim"), in: database)
        return HostileStore(database: database)
    }

    /// Jobs, events, lanes, and the lanes' pending count.
    func counts() async throws -> [Int] {
        let row = try await database.query("""
            SELECT (SELECT count(*) FROM wa_outbox.jobs), (SELECT count(*) FROM wa_outbox.events),
                   (SELECT count(*) FROM wa_outbox.lanes), (SELECT coalesce(sum(pending), 0)::int8 FROM wa_outbox.lanes)
            """)[0]
        return try (0..<4).map { try row.decode(Int.self, at: $0) }
    }

    /// The SQLSTATE `wa_outbox.enqueue` answered with, or nil if it accepted the payload.
    func enqueueSQL(_ payload: HostilePayload) async -> String? {
        do {
            if let bytes = payload.bytes {
                _ = try await database.query("""
                    SELECT outbox_id FROM wa_outbox.enqueue('org1', 's1', \(payload.kind.rawValue), convert_from(\(PostgresBytes(bytes)), 'UTF8')::jsonb)
                    """)
            } else {
                _ = try await database.query("""
                    SELECT outbox_id FROM wa_outbox.enqueue('org1', 's1', \(payload.kind.rawValue), \(PostgresJSONB(payload.json)))
                    """)
            }
            return nil
        } catch let error as PostgresError {
            return error.sqlState ?? "\(error)"
        } catch {
            return "\(error)"
        }
    }

    static let fieldCases = 6
    static let goodText = #"{"type":"text","chat":"\#(HostileInput.goodChat)","text":"hello"}"#

    /// A well-formed payload with a hostile field beside it: NUL, an oversized idempotency key, no
    /// organization, an empty key.
    static func hostileFields(_ index: Int) -> EnqueueRequest {
        var request = EnqueueRequest(org: "org1", session: "s1", kind: .send, payload: goodText)
        switch index % fieldCases {
        case 0: request.idempotencyKey = "key\u{0}\(index)"
        case 1: request.idempotencyKey = String(repeating: "k", count: 256 + index % 50)
        case 2: request.session = "s1\u{0}"
        case 3: request.org = ""
        case 4: request.idempotencyKey = ""
        default: request.org = "org1\u{0}org2"
        }
        return request
    }

    func expectAWellFormedSendStillWorks(after before: [Int]) async throws {
        let result = try await Outbox.enqueue(EnqueueRequest(org: "org1", session: "s1", kind: .send, payload: Self.goodText), in: database)
        #expect(result.status == "queued" && !result.replayed)
        #expect(try await counts() == [before[0] + 1, before[1] + 1, max(before[2], 1), before[3] + 1])
    }

    func close() async { await database.close() }
}
