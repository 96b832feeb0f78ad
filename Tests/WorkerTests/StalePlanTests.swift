import Foundation
import OutboxCore
import OutboxStore
import PostgresClient
import Testing
import TestSupport
@testable import Worker

/// A plan a connection keeps (a prepared statement's generic plan) was made with the tables as they
/// were then. A worker that starts on an empty queue and then meets a backlog must not go on
/// running a plan made for an empty table: such plans scanned the jobs once per lane in each
/// claim, and a completion of 9,941 jobs ran three and a half minutes (`scripts/bench bloat`,
/// 2026-11-29). A worker's connections remake their plans when a claim reports the jobs table
/// more than four times the size it had when they last did (`PlanRenewal`).
@Suite("Plans made on an empty queue")
struct StalePlanTests {
    /// Sequential scans of `table` counted so far, by every connection whose counters were sent on.
    func scansSoFar(of table: String, on connection: PostgresConnection) async throws -> Int {
        try await connection.query(PostgresQuery("""
            SELECT coalesce(sum(seq_scan), 0)::int8 FROM pg_stat_user_tables WHERE schemaname = 'wa_outbox' AND relname = $1
            """, binds: [table.postgresBind]))[0].decode(Int.self, at: 0)
    }

    /// Sends this connection's pending counters on, so that the next transaction's are its own.
    func flushStatistics(_ connection: PostgresConnection) async throws {
        try await connection.execute("SELECT pg_stat_force_next_flush()")
    }

    @Test func aWorkersStatementsProbeByIndexAfterTheQueueGrew() async throws {
        let fixture = try await Fixture.make()
        let sessions = (1...20).map { "stale\($0)" }
        try await fixture.addSessions(sessions)
        try await fixture.database.query("ANALYZE wa_outbox.jobs, wa_outbox.lanes, wa_outbox.sessions")
        // The worker's own connection, as its pool keeps it, starting on a quiet queue: its
        // claims find next to nothing and its completions write one job at a time.
        let plans = PlanGeneration()
        let connection = try await PostgresConnection.connect(PostgresConfiguration(fixture.url), plans: plans, logger: TestEnvironment.logger)
        var renewal = PlanRenewal()
        let worker = UUID()
        func claim(_ limit: Int) async throws -> (jobs: [ClaimedJob], jobScans: Int, blocks: Int64) {
            try await flushStatistics(connection)
            let before = try await scansSoFar(of: "jobs", on: connection)
            // As the worker runs it: BEGIN, the claim and COMMIT in one round trip.
            let batch = try ClaimQuery.batch(from: try await connection.queryGenericPlan(ClaimQuery.query(workerID: worker, limit: limit)))
            try await flushStatistics(connection)
            return (batch.jobs, try await scansSoFar(of: "jobs", on: connection) - before, batch.jobsTableBlocks)
        }
        // As the worker's writer runs it: in a transaction of its own.
        func complete(_ jobs: [ClaimedJob]) async throws -> (written: Int, jobScans: Int) {
            try await flushStatistics(connection)
            let before = try await scansSoFar(of: "jobs", on: connection)
            let written = try await CompletionQuery.complete(
                jobs.map { Completion(jobID: $0.id, claim: $0.claim, workerID: worker, outcome: .succeeded) }, on: connection)
            try await flushStatistics(connection)
            return (written.count, try await scansSoFar(of: "jobs", on: connection) - before)
        }
        for round in 0..<8 {
            try await fixture.enqueueTexts(count: 1, sessions: [sessions[round % sessions.count]], chatsPerSession: 1)
            let quiet = try await claim(20)
            #expect(quiet.jobs.count == 1)
            if renewal.observe(jobsTableBlocks: quiet.blocks) { plans.renew() }
            #expect(try await complete(quiet.jobs).written == 1)
        }
        let quietRenewals = connection.planRenewals
        #expect(quietRenewals <= 2, "plans were remade \(quietRenewals) times on a table of a few blocks")

        // A backlog arrives. The first claim may still run an empty queue's plan; it reports the
        // table's new size, and nothing after it does.
        try await fixture.enqueueTexts(count: 20_000, sessions: sessions, chatsPerSession: 100)
        let first = try await claim(20)
        #expect(first.jobs.count == 20)
        let grown = renewal.observe(jobsTableBlocks: first.blocks)
        #expect(grown, "a table of \(first.blocks) blocks did not renew plans")
        if grown { plans.renew() }
        let written = try await complete(first.jobs)
        #expect(written.written == 20)
        #expect(written.jobScans == 0, "the completion scanned the jobs table \(written.jobScans) times")
        #expect(connection.planRenewals == quietRenewals + 1)
        let busy = try await claim(20)
        #expect(busy.jobs.count == 20)
        #expect(busy.jobScans == 0, "the claim scanned the jobs table \(busy.jobScans) times")
        await connection.close()
        await fixture.close()
    }

    /// Four times the size renews; growth short of it, and a steady size, do not; a table that
    /// shrank is measured from its new size.
    @Test func plansAreRenewedWhenTheJobsTableQuadruples() {
        var renewal = PlanRenewal()
        let sizes: [Int64] = [0, 3, 12, 13] + Array(repeating: 40, count: 100) + [2, 9]
        let renewed = sizes.enumerated().filter { renewal.observe(jobsTableBlocks: $0.element) }.map(\.offset)
        #expect(renewed == [1, 3, 105], "renewed at reports \(renewed)")
    }
}
