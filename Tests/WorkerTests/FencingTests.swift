import Foundation
import OutboxCore
import OutboxStore
import PostgresClient
import Testing
import TestSupport

/// A completion counts only for the claim it belongs to.
///
/// A deferral gives its attempt back, so one worker could claim a job again under the same
/// (worker, attempt) pair that fenced completions. A completion of the earlier claim that reached
/// the database late then counted for the later one: a hand-back whose claim's commit the worker
/// could not confirm, or a write retried after its connection broke, requeued a job that was
/// already at WhatsApp, and it was sent a second time (scripts/chaos with PostgreSQL restarts:
/// WAHA copies whose job had one attempt). Migration 0019 fences by a claim number that only grows.
@Suite("Fencing by claim")
struct FencingTests {
    @Test func aLateCompletionOfAnEarlierClaimDoesNotCountForTheNextOne() async throws {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["f"])
        try await fixture.enqueueTexts(count: 1, sessions: ["f"], chatsPerSession: 1)
        let worker = UUID()
        func claim() async throws -> ClaimedJob {
            try #require(try await fixture.database.withConnection { try await ClaimQuery.claim(workerID: worker, limit: 1, on: $0) }.jobs.first)
        }
        func complete(_ completion: Completion) async throws -> Set<Int64> {
            try await fixture.database.withConnection { try await CompletionQuery.complete([completion], on: $0) }
        }

        let first = try await claim()
        let handBack = Completion(jobID: first.id, claim: first.claim, workerID: worker,
                                  outcome: .defer_(after: .zero, code: .engineError, message: "the claim did not complete"))
        #expect(try await complete(handBack) == [first.id], "the hand-back of the first claim counts")
        let second = try await claim()
        #expect(second.id == first.id && second.attempt == first.attempt && second.claim == first.claim + 1)
        // The pair that fenced completions before migration 0019 matches the first claim's hand-back.
        let oldFence = "SELECT count(*) FROM wa_outbox.jobs WHERE id = \(first.id) AND state = 'running' AND worker_id = '\(worker.uuidString.lowercased())'::uuid AND attempts = \(first.attempt)"
        #expect(try await fixture.count(oldFence) == 1)

        // The same hand-back again (its first write's outcome was unknown to the worker): ignored.
        #expect(try await complete(handBack).isEmpty, "a completion of the first claim counted for the second")
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'running'") == 1)
        // The second claim's own result counts, once.
        let sent = Completion(jobID: second.id, claim: second.claim, workerID: worker, outcome: .succeeded)
        #expect(try await complete(sent) == [second.id])
        #expect(try await complete(sent).isEmpty)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.events WHERE status = 'sent'") == 1)
        await fixture.close()
    }
}
