import Foundation
import OutboxCore
import OutboxStore
import PostgresClient
import Testing
import TestSupport

/// A completion counts only for the claim it belongs to.
///
/// Completions were fenced by (worker, attempt). A deferral gives its attempt back, and a claim
/// that is rolled back never happened, so one worker could claim a job again under the same pair.
/// A completion of the earlier claim that reached the database late then counted for the later
/// one: a worker whose claim's commit failed in a PostgreSQL restart handed the jobs back, the
/// hand-back was written after the same worker's next claim of them, and it requeued jobs already
/// at WhatsApp, which were sent a second time (scripts/chaos: WAHA copies of jobs with one
/// attempt). Migration 0019 fences by a token of each claim statement's own.
@Suite("Fencing by claim")
struct FencingTests {
    let worker = UUID()

    func claim(_ fixture: Fixture) async throws -> ClaimedJob {
        try #require(try await fixture.database.withConnection { try await ClaimQuery.claim(workerID: worker, limit: 1, on: $0) }.jobs.first)
    }

    func complete(_ completion: Completion, _ fixture: Fixture) async throws -> Set<Int64> {
        try await fixture.database.withConnection { try await CompletionQuery.complete([completion], on: $0) }
    }

    func handBack(_ job: ClaimedJob) -> Completion {
        Completion(jobID: job.id, claim: job.claim, workerID: worker, outcome: .defer_(after: .zero, code: .engineError, message: "the claim did not complete"))
    }

    /// The pair that fenced completions before migration 0019 matches `job`'s completion.
    func oldFenceMatches(_ job: ClaimedJob, _ fixture: Fixture) async throws -> Bool {
        try await fixture.count("""
            SELECT count(*) FROM wa_outbox.jobs WHERE id = \(job.id) AND state = 'running'
              AND worker_id = '\(worker.uuidString.lowercased())'::uuid AND attempts = \(job.attempt)
            """) == 1
    }

    @Test func aHandBackOfARolledBackClaimDoesNotCountForTheNextClaim() async throws {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["f"])
        try await fixture.enqueueTexts(count: 1, sessions: ["f"], chatsPerSession: 1)
        // A claim whose transaction does not commit (its connection died in a restart).
        let rolledBack = try await fixture.database.withConnection { connection in
            try await connection.execute("BEGIN")
            let job = try #require(try await ClaimQuery.claim(workerID: worker, limit: 1, on: connection).jobs.first)
            try await connection.execute("ROLLBACK")
            return job
        }
        let next = try await claim(fixture)
        #expect(next.id == rolledBack.id && next.attempt == rolledBack.attempt)
        #expect(try await oldFenceMatches(rolledBack, fixture))
        // The worker hands back what the failed claim returned: it must not touch the next claim.
        #expect(try await complete(handBack(rolledBack), fixture).isEmpty, "a hand-back of a rolled-back claim requeued the next claim's job")
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'running'") == 1)
        #expect(try await complete(Completion(jobID: next.id, claim: next.claim, workerID: worker, outcome: .succeeded), fixture) == [next.id])
        await fixture.close()
    }

    @Test func aLateCompletionOfADeferredClaimDoesNotCountForTheNextOne() async throws {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["f"])
        try await fixture.enqueueTexts(count: 1, sessions: ["f"], chatsPerSession: 1)
        let first = try await claim(fixture)
        #expect(try await complete(handBack(first), fixture) == [first.id], "the hand-back of the first claim counts")
        let second = try await claim(fixture)
        #expect(second.id == first.id && second.attempt == first.attempt && second.claim != first.claim)
        #expect(try await oldFenceMatches(first, fixture))
        // The same hand-back again (its first write's outcome was unknown to the worker): ignored.
        #expect(try await complete(handBack(first), fixture).isEmpty, "a completion of the first claim counted for the second")
        let sent = Completion(jobID: second.id, claim: second.claim, workerID: worker, outcome: .succeeded)
        #expect(try await complete(sent, fixture) == [second.id])
        #expect(try await complete(sent, fixture).isEmpty)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.events WHERE status = 'sent'") == 1)
        await fixture.close()
    }
}
