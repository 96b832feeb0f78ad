import Foundation
import OutboxCore
import OutboxStore
import PostgresClient
import Testing
import TestSupport

/// The statements every worker runs many times a second must keep their shape whatever the
/// table statistics say. Statistics are taken when they mislead most: right after a fill, with no
/// job running. A completion planned as a walk over an index of running jobs (there was one until
/// migration 0008) cost 40 ms to 1 s per completion on a 1M-job backlog, and a claim that scanned
/// the queue instead of probing heads by primary key 100 ms instead of 9.
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

    @Test func theCompletionTakesEachJobByItsPrimaryKey() async throws {
        let fixture = try await queueAnalyzed { try await $0.query("ANALYZE wa_outbox.jobs") }

        let worker = UUID()
        let claimed = try await fixture.database.withConnection { try await ClaimQuery.claim(workerID: worker, limit: 20, on: $0) }.jobs
        #expect(claimed.count == 20)
        let completions = claimed.map { Completion(jobID: $0.id, claim: $0.claim, workerID: worker, outcome: .succeeded) }
        let statement = CompletionQuery.query(completions)
        let custom = try await fixture.database.query(PostgresQuery("EXPLAIN " + statement.sql, binds: statement.binds))
            .map { try $0.decode(String.self, at: 0) }.joined(separator: "\n")
        // The plan it runs: the generic one (remade as the jobs table grows, `PlanRenewal`).
        let generic = try await fixture.database.withConnection { connection in
            try await connection.execute("SET plan_cache_mode = force_generic_plan")
            try await connection.execute("PREPARE plan_complete(int8[], text[], text[], text[], text[], text[], int8[], text[], text[]) AS " + CompletionQuery.sql)
            let plan = try await connection.query("""
                EXPLAIN EXECUTE plan_complete('{1,2}', '{null,null}', '{a,b}', '{succeeded,succeeded}', '{null,null}', '{null,null}', '{0,0}', '{null,null}', '{null,null}')
                """).map { try $0.decode(String.self, at: 0) }.joined(separator: "\n")
            try await connection.execute("DEALLOCATE plan_complete")
            try await connection.execute("RESET plan_cache_mode")
            return plan
        }
        for plan in [custom, generic] {
            #expect(plan.contains("Index Scan using jobs_pkey on jobs j"), "the completion does not probe each job by id:\n\(plan)")
            #expect(!plan.contains("Seq Scan on jobs"), "the completion scans the jobs:\n\(plan)")
        }

        // And it still counts, once: a second identical completion is fenced off.
        let counted = try await fixture.database.withConnection { try await CompletionQuery.complete(completions, on: $0) }
        #expect(counted.count == 20)
        let again = try await fixture.database.withConnection { try await CompletionQuery.complete(completions, on: $0) }
        #expect(again.isEmpty)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.events WHERE status = 'sent'") == 20)
    }

    /// At a few jobs a second each completion writes one job, and PostgreSQL, left to choose, made
    /// a plan for each of them: at 200 jobs/s, 2,207 plans of 0.45 ms for 2,995 completions of
    /// 0.25 ms. The completion runs its generic plan, as the claim does.
    @Test func aCompletionOfOneJobRunsTheGenericPlan() async throws {
        let fixture = try await queueAnalyzed { try await $0.query("ANALYZE wa_outbox.jobs") }
        let connection = try await PostgresConnection.connect(PostgresConfiguration(fixture.url), logger: TestEnvironment.logger)
        let worker = UUID()
        for _ in 0..<10 {
            let job = try await ClaimQuery.claim(workerID: worker, limit: 1, on: connection).jobs
            #expect(job.count == 1)
            let written = try await CompletionQuery.complete(job.map { Completion(jobID: $0.id, claim: $0.claim, workerID: worker, outcome: .succeeded) },
                                                             on: connection, notifyingAfterCommit: true)
            #expect(written.count == 1)
        }
        let plans = try await connection.query(PostgresQuery("""
            SELECT generic_plans, custom_plans FROM pg_prepared_statements
            WHERE statement LIKE '%WITH input AS MATERIALIZED%' AND statement NOT LIKE '%pg_prepared_statements%'
            """, binds: []))
        #expect(plans.count == 1)
        #expect(try plans.first?.decode(Int.self, at: 0) == 10)
        #expect(try plans.first?.decode(Int.self, at: 1) == 0, "completions were planned one by one")
        await connection.close()
        await fixture.close()
    }

    @Test func theClaimTakesEachHeadByItsPrimaryKeyEvenWhenStatisticsSayNothingIsQueued() async throws {
        // Statistics from a quiet hour before a burst: no job queued.
        let fixture = try await queueAnalyzed { database in
            try await database.query("UPDATE wa_outbox.jobs SET state = 'succeeded', finished_at = now()")
            try await database.query("ANALYZE wa_outbox.jobs")
            try await database.query("UPDATE wa_outbox.jobs SET state = 'queued', finished_at = NULL")
        }

        // The plan the worker's claim runs (generic, remade as the jobs table grows) and one made for
        // these parameters.
        for mode in ["force_custom_plan", "force_generic_plan"] {
            let plan = try await fixture.database.withConnection { connection in
                try await connection.execute("SET plan_cache_mode = \(mode)")
                try await connection.execute("PREPARE plan_claim(int, int, uuid, uuid, int, bool, int, int) AS " + ClaimQuery.sql)
                let plan = try await connection.query("EXPLAIN EXECUTE plan_claim(80, 20, gen_random_uuid(), gen_random_uuid(), 10, false, 10, 200)")
                    .map { try $0.decode(String.self, at: 0) }.joined(separator: "\n")
                try await connection.execute("DEALLOCATE plan_claim")
                try await connection.execute("RESET plan_cache_mode")
                return plan
            }
            #expect(plan.contains("Index Scan using jobs_pkey on jobs"), "the claim does not take its jobs by primary key:\n\(plan)")
            #expect(!plan.contains("Seq Scan on jobs"), "the claim (or its runs) scans the jobs:\n\(plan)")
            // A plan made for one execution knows the lanes' real size: a hundred are scanned
            // faster than probed. A generic plan must probe, whatever the lanes' number.
            #expect(mode == "force_custom_plan" || !plan.contains("Seq Scan on lanes"), "the claim scans the lanes:\n\(plan)")
        }
        try await fixture.database.query("UPDATE wa_outbox.sessions SET max_in_flight = 2")
        let claimed = try await fixture.database.withConnection { try await ClaimQuery.claim(workerID: UUID(), limit: 20, on: $0) }
        #expect(claimed.jobs.count == 20)
        let runs = RunLimit(length: 10, pacedByDefault: false, defaultBurst: 10)
        let run = try await fixture.database.withConnection { try await ClaimQuery.claim(workerID: UUID(), limit: 20, runs: runs, on: $0) }
        #expect(run.jobs.count > 20, "no runs claimed: \(run.jobs.count) jobs")
        await fixture.close()
    }

    /// The API's claim of the job it just enqueued probes that job's lane by primary key, however
    /// many lanes are ready: as a join, its generic plan walked the index of ready lanes.
    @Test func theClaimOfOneJobProbesItsLaneByPrimaryKey() async throws {
        // 2,000 ready lanes (20 sessions of 100 chats with one job each), with statistics from a
        // quiet hour before the burst: no lane ready.
        let fixture = try await Fixture.make()
        let sessions = (1...20).map { "plan\($0)" }
        try await fixture.addSessions(sessions, maxInFlight: 8)
        try await fixture.enqueueTexts(count: 2_000, sessions: sessions, chatsPerSession: 100)
        try await fixture.database.query("UPDATE wa_outbox.lanes SET ready_at = NULL")
        try await fixture.database.query("ANALYZE wa_outbox.jobs, wa_outbox.lanes, wa_outbox.sessions")
        try await fixture.database.query("UPDATE wa_outbox.lanes SET ready_at = now() - interval '1 second'")
        let (plan, claimed) = try await fixture.database.withConnection { connection in
            try await connection.withTransaction { connection in
                let request = EnqueueRequest(org: "org1", session: "plan1", kind: .send,
                                             payload: #"{"type":"text","chat":"4917700000000@s.whatsapp.net","text":"now"}"#)
                try await connection.query(Outbox.query(request, function: "enqueue_to_claim"))
                try await connection.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                try await connection.execute("PREPARE plan_one(uuid, uuid) AS " + ClaimQuery.enqueuedSQL)
                let plan = try await connection.query("EXPLAIN EXECUTE plan_one(gen_random_uuid(), gen_random_uuid())")
                    .map { try $0.decode(String.self, at: 0) }.joined(separator: "\n")
                try await connection.execute("DEALLOCATE plan_one")
                let claim = ClaimQuery.claimEnqueued(workerID: UUID(), token: UUID())
                return (plan, try ClaimQuery.batch(from: try await connection.query(claim)).jobs)
            }
        }
        #expect(plan.contains("lanes_pkey") && !plan.contains("lanes_session_ready") && !plan.contains("lanes_ready"),
                "the claim of one job does not probe its lane by primary key:\n\(plan)")
        #expect(claimed.count == 1)
        await fixture.close()
    }

    /// The claim changes no column any index on `jobs` mentions, so PostgreSQL rewrites each claimed
    /// row in place (a heap-only update) and writes no index entry for it. An index on `state` or
    /// `worker_id` (a predicate counts) makes every claim a full update again: a new entry in each
    /// index, and a dead one to clean up later.
    ///
    /// In place needs room on the row's page too, which the schema leaves (fillfactor 45) but a
    /// claim of many heads from one page can use up; the queue here is written with pages mostly
    /// empty, so every claim that may be heap-only is, and the count shows whether any index
    /// stopped it.
    @Test func theClaimRewritesEachJobInPlaceWithoutTouchingAnIndex() async throws {
        let fixture = try await Fixture.make()
        let sessions = (1...20).map { "hot\($0)" }
        try await fixture.addSessions(sessions)
        try await fixture.database.query("ALTER TABLE wa_outbox.jobs SET (fillfactor = 10)")
        try await fixture.enqueueTexts(count: 200, sessions: sessions, chatsPerSession: 5)
        func updates() async throws -> (all: Int, hot: Int) {
            try await fixture.database.withConnection { connection in
                try await connection.execute("SELECT pg_stat_clear_snapshot()")
                let row = try await connection.query("""
                    SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relid = 'wa_outbox.jobs'::regclass
                    """)[0]
                return (try row.decode(at: 0), try row.decode(at: 1))
            }
        }
        let before = try await updates()
        let claimed = try await fixture.database.withConnection { connection in
            let batch = try await ClaimQuery.claim(workerID: UUID(), limit: 20, on: connection)
            try await connection.execute("SELECT pg_stat_force_next_flush()")
            try await connection.execute("SELECT 1")
            return batch.jobs
        }
        #expect(claimed.count == 20)
        var after = try await updates()
        for _ in 0..<50 where after.all - before.all < 20 {
            try await Task.sleep(for: .milliseconds(100))
            after = try await updates()
        }
        #expect(after.all - before.all == 20, "the claim updated \(after.all - before.all) job rows")
        #expect(after.hot - before.hot == 20, "of 20 claimed job rows, \(after.hot - before.hot) were rewritten in place")
        // The rescue finds them through their lanes (their worker never registered: no lease).
        #expect(try await fixture.database.withConnection { try await RescueQuery.rescue(on: $0) }.count == 20)
        await fixture.close()
    }
}
