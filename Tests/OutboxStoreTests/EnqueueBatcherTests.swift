import Foundation
import Logging
import OutboxCore
import OutboxStore
import PostgresClient
import Testing
import TestSupport

/// Requests enqueued together share a statement and a commit; each still gets exactly the answer
/// it would get alone, and a bad one costs no other its job.
@Suite("Enqueues in batches")
struct EnqueueBatcherTests {
    static func database() async throws -> PostgresDatabase {
        let url = try await TestEnvironment.freshDatabase(prefix: "batch")
        let database = PostgresDatabase(configuration: PostgresConfiguration(url), maxConnections: 8, logger: TestEnvironment.logger)
        try await Migrator(migrations: try Migration.load(directory: TestEnvironment.migrationsDirectory), logger: TestEnvironment.logger).migrate(database)
        try await database.query("""
            INSERT INTO wa_outbox.sessions (id, org, engine) VALUES ('a', 'org1', 'sim'), ('b', 'org1', 'sim'), ('c', 'org2', 'sim')
            """)
        return database
    }

    static func text(_ chat: Int, _ text: String) -> String {
        #"{"type":"text","chat":"49151000000\#(chat)@s.whatsapp.net","text":"\#(text)"}"#
    }

    @Test func concurrentRequestsShareStatementsAndEachGetsItsOwnJob() async throws {
        let database = try await Self.database()
        let batcher = EnqueueBatcher(database: database, notifier: WakeupNotifier(database: database, channels: [WakeupNotifier.jobs], logger: TestEnvironment.logger))
        let requests = (0..<400).map { n in
            EnqueueRequest(org: n % 3 == 2 ? "org2" : "org1", session: ["a", "b", "c"][n % 3], kind: .send, payload: Self.text(n % 7 + 10, "request \(n)"))
        }
        let answers = try await withThrowingTaskGroup(of: (Int, SendResult).self) { group in
            for (n, request) in requests.enumerated() { group.addTask { (n, try await batcher.enqueue(request)) } }
            var answers: [Int: SendResult] = [:]
            for try await (n, answer) in group { answers[n] = answer }
            return answers
        }
        #expect(answers.count == 400)
        #expect(Set(answers.values.map(\.outboxId)).count == 400)
        // Each answer names the job its own request made.
        for (n, answer) in answers {
            let row = try await database.query("SELECT org, session_id, payload->>'text' FROM wa_outbox.jobs WHERE id = \(Int64(answer.outboxId)!)")
            #expect(try row[0].decode(String.self, at: 0) == requests[n].org)
            #expect(try row[0].decode(String.self, at: 1) == requests[n].session)
            #expect(try row[0].decode(String.self, at: 2) == "request \(n)")
            #expect(answer.status == "queued" && !answer.replayed)
        }
        let statistics = batcher.statistics
        print("400 concurrent enqueues: \(statistics.statements) statements, the largest of \(statistics.largest)")
        #expect(statistics.statements < 400 && statistics.largest > 1, "no batch formed: \(statistics)")
        #expect(try await database.query("SELECT sum(pending)::int8 FROM wa_outbox.lanes")[0].decode(Int.self, at: 0) == 400)
        #expect(try await database.query("SELECT count(*)::int8 FROM wa_outbox.events WHERE status = 'queued'")[0].decode(Int.self, at: 0) == 400)
        await database.close()
    }

    @Test func refusedRequestsAndRepeatedKeysGetTheAnswersTheyGetAlone() async throws {
        let database = try await Self.database()
        let batcher = EnqueueBatcher(database: database, notifier: WakeupNotifier(database: database, channels: [WakeupNotifier.jobs], logger: TestEnvironment.logger))
        enum Expected: Equatable { case queued, replayOf(Int), refused(ErrorCode) }
        var requests: [(EnqueueRequest, Expected)] = []
        for n in 0..<200 {
            switch n % 10 {
            case 0: requests.append((EnqueueRequest(org: "org1", session: "a", kind: .send, payload: #"{"type":"text","chat":"bad","text":"x"}"#), .refused(.validationError)))
            case 1: requests.append((EnqueueRequest(org: "org1", session: "nope", kind: .send, payload: Self.text(1, "x")), .refused(.notFound)))
            case 2: requests.append((EnqueueRequest(org: "org2", session: "a", kind: .send, payload: Self.text(1, "x")), .refused(.notFound)))
            case 3: requests.append((EnqueueRequest(org: "org1", session: "b", kind: .send, payload: Self.text(2, "keyed \(n)"), idempotencyKey: "k\(n)"), .queued))
            case 4: requests.append((EnqueueRequest(org: "org1", session: "b", kind: .send, payload: Self.text(2, "keyed \(n - 1)"), idempotencyKey: "k\(n - 1)"), .replayOf(n - 1)))
            default: requests.append((EnqueueRequest(org: "org1", session: "a", kind: .send, payload: Self.text(n % 4, "plain \(n)")), .queued))
            }
        }
        // The keyed pairs are sent one after the other, everything else at once.
        let answers = await withTaskGroup(of: (Int, Result<SendResult, OutboxError>).self) { group in
            for (n, (request, expected)) in requests.enumerated() {
                if case .replayOf = expected { continue }
                group.addTask {
                    let first: Result<SendResult, OutboxError> = await { () async -> Result<SendResult, OutboxError> in
                        do throws(OutboxError) { return .success(try await batcher.enqueue(request)) } catch { return .failure(error) }
                    }()
                    return (n, first)
                }
            }
            var answers: [Int: Result<SendResult, OutboxError>] = [:]
            for await (n, answer) in group { answers[n] = answer }
            return answers
        }
        var all = answers
        await withTaskGroup(of: (Int, Result<SendResult, OutboxError>).self) { group in
            for (n, (request, expected)) in requests.enumerated() {
                guard case .replayOf = expected else { continue }
                group.addTask {
                    do throws(OutboxError) { return (n, .success(try await batcher.enqueue(request))) } catch { return (n, .failure(error)) }
                }
            }
            for await (n, answer) in group { all[n] = answer }
        }
        #expect(all.count == 200)
        for (n, (_, expected)) in requests.enumerated() {
            switch (expected, all[n]) {
            case (.queued, .success(let result)?):
                #expect(!result.replayed)
            case (.replayOf(let first), .success(let result)?):
                #expect(result.replayed)
                if case .success(let original)? = all[first] { #expect(result.outboxId == original.outboxId) }
            case (.refused(let code), .failure(let error)?):
                #expect(error.code == code, "request \(n): \(error)")
            default:
                Issue.record("request \(n): expected \(expected), got \(String(describing: all[n]))")
            }
        }
        let queued = requests.filter { $0.1 == .queued }.count
        #expect(try await database.query("SELECT count(*)::int8 FROM wa_outbox.jobs")[0].decode(Int.self, at: 0) == queued)
        await database.close()
    }
}
