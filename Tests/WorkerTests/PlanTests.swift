import Foundation
import OutboxCore
import OutboxStore
import PostgresClient
import Testing
import TestSupport

/// The statements every worker runs many times a second must keep their shape whatever the
/// table statistics say. Statistics are taken when they mislead most: right after a fill, with no
/// job running, so the planner believes the `jobs_running` index is empty. During a drain that
/// index holds a dead entry for every job claimed since the last vacuum; a plan that walks it cost
/// 40 ms to 1 s per completion on a 1M-job backlog.
@Suite("Statement plans")
struct PlanTests {
    /// 2,000 jobs queued over 20 sessions × 5 chats; `analyzeJobs` takes the jobs statistics at a
    /// moment of its choosing, then lanes and sessions are analyzed.
    func queueAnalyzed(analyzeJobs: (PostgresDatabase) async throws -> Void) async throws -> Fixture {
        let fixture = try await Fixture.make()
        let sessions = (1...20).map { "plan\($0)" }
        try await fixture.addSessions(sessions)
        try await fixture.enqueueTexts(count: 2_000, sessions: sessions, chatsPerSession: 5)
        try await analyzeJobs(fixture.database)
        try await fixture.database.query("ANALYZE wa_outbox.lanes")
        try await fixture.database.query("ANALYZE wa_outbox.sessions")
        return fixture
    }

    @Test func theCompletionLocksEachJobByItsPrimaryKeyNeverThroughTheRunningIndex() async throws {
        let fixture = try await queueAnalyzed { try await $0.query("ANALYZE wa_outbox.jobs") }

        let worker = UUID()
        let claimed = try await fixture.database.withConnection { try await ClaimQuery.claim(workerID: worker, limit: 20, on: $0) }.jobs
        #expect(claimed.count == 20)
        let completions = claimed.map { Completion(jobID: $0.id, attempt: $0.attempt, workerID: worker, outcome: .succeeded) }
        let statement = CompletionQuery.query(completions)
        let plan = try await fixture.database.query(PostgresQuery("EXPLAIN " + statement.sql, binds: statement.binds))
            .map { try $0.decode(String.self, at: 0) }.joined(separator: "\n")
        #expect(!plan.contains("jobs_running"), "the completion walks the running index:\n\(plan)")
        #expect(plan.contains("Index Scan using jobs_pkey on jobs held"), "the completion does not probe each job by id:\n\(plan)")

        // And it still counts, once: a second identical completion is fenced off.
        let counted = try await fixture.database.withConnection { try await CompletionQuery.complete(completions, on: $0) }
        #expect(counted.count == 20)
        let again = try await fixture.database.withConnection { try await CompletionQuery.complete(completions, on: $0) }
        #expect(again.isEmpty)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.events WHERE status = 'sent'") == 20)
    }

    @Test func theClaimTakesEachHeadByItsPrimaryKeyEvenWhenStatisticsSayNothingIsQueued() async throws {
        // Statistics from a quiet hour before a burst: no job queued.
        let fixture = try await queueAnalyzed { database in
            try await database.query("UPDATE wa_outbox.jobs SET state = 'succeeded'")
            try await database.query("ANALYZE wa_outbox.jobs")
            try await database.query("UPDATE wa_outbox.jobs SET state = 'queued'")
        }

        // The plan a worker runs after a few claims: the generic one.
        let plan = try await fixture.database.withConnection { connection in
            try await connection.execute("SET plan_cache_mode = force_generic_plan")
            try await connection.execute("PREPARE plan_claim(int, int, uuid) AS " + ClaimQuery.sql)
            let plan = try await connection.query("EXPLAIN EXECUTE plan_claim(80, 20, gen_random_uuid())")
                .map { try $0.decode(String.self, at: 0) }.joined(separator: "\n")
            try await connection.execute("DEALLOCATE plan_claim")
            try await connection.execute("RESET plan_cache_mode")
            return plan
        }
        #expect(plan.contains("Index Scan using jobs_pkey on jobs"), "the claim does not take its jobs by primary key:\n\(plan)")
        let claimed = try await fixture.database.withConnection { try await ClaimQuery.claim(workerID: UUID(), limit: 20, on: $0) }
        #expect(claimed.jobs.count == 20)
        await fixture.close()
    }
}
