import Foundation
import OutboxCore
import OutboxStore
import PostgresClient
import Simulator
import Synchronization
import Testing
import TestSupport
@testable import Worker

/// A worker claims again after writing completions only when the write may have left a job
/// claimable. At 200 jobs/s it used to claim after every write, and every other claim found
/// nothing (6,009 claims for 3,000 jobs). A wake-up it misses would leave ready jobs waiting for
/// the next poll, so the worker here polls once a minute: every job must go without one.
@Suite("Claiming again after a write")
struct WakeAfterWriteTests {
    func claimOne(_ fixture: Fixture, worker: UUID) async throws -> ClaimedJob {
        let jobs = try await fixture.database.withConnection { try await ClaimQuery.claim(workerID: worker, limit: 1, on: $0) }.jobs
        try #require(jobs.count == 1)
        return jobs[0]
    }

    func write(_ job: ClaimedJob, _ outcome: Outcome, worker: UUID, fixture: Fixture) async throws -> CompletionQuery.Written {
        try await fixture.database.withConnection {
            try await CompletionQuery.write([Completion(jobID: job.id, claim: job.claim, workerID: worker, outcome: outcome)], on: $0)
        }
    }

    @Test func aWriteSaysWhetherItLeftAJobClaimable() async throws {
        let fixture = try await Fixture.make()
        let worker = UUID()
        try await fixture.addSessions(["lone", "chain", "capped"])

        // The only job of its chat and of its session: nothing is left.
        try await fixture.enqueueTexts(count: 1, sessions: ["lone"], chatsPerSession: 1)
        let lone = try await write(try await claimOne(fixture, worker: worker), .succeeded, worker: worker, fixture: fixture)
        #expect(lone.counted.count == 1)
        #expect(!lone.readiedWork, "a lone job's completion said work was left")

        // The chat's next job waited behind it.
        try await fixture.enqueueTexts(count: 2, sessions: ["chain"], chatsPerSession: 1)
        let first = try await write(try await claimOne(fixture, worker: worker), .succeeded, worker: worker, fixture: fixture)
        #expect(first.readiedWork, "the chat's next job was not reported ready")
        _ = try await write(try await claimOne(fixture, worker: worker), .succeeded, worker: worker, fixture: fixture)

        // Another chat of the same session waited for its only slot.
        try await fixture.enqueueTexts(count: 2, sessions: ["capped"], chatsPerSession: 2)
        let slot = try await write(try await claimOne(fixture, worker: worker), .succeeded, worker: worker, fixture: fixture)
        #expect(slot.readiedWork, "the freed slot's waiting chat was not reported ready")
        _ = try await write(try await claimOne(fixture, worker: worker), .succeeded, worker: worker, fixture: fixture)

        // A retry: ready at once, or only after its delay.
        try await fixture.enqueueTexts(count: 1, sessions: ["lone"], chatsPerSession: 1)
        let later = try await write(try await claimOne(fixture, worker: worker), .retry(after: .seconds(60), code: .engineError, message: "503"),
                                    worker: worker, fixture: fixture)
        #expect(!later.readiedWork, "a retry in a minute was reported ready now")
        try await fixture.database.query("UPDATE wa_outbox.jobs SET available_at = now() WHERE state = 'queued'")
        try await fixture.database.query("UPDATE wa_outbox.lanes SET ready_at = now() WHERE pending > 0")
        let now = try await write(try await claimOne(fixture, worker: worker), .retry(after: .zero, code: .engineError, message: "503"),
                                  worker: worker, fixture: fixture)
        #expect(now.readiedWork, "a retry due now was not reported ready")
        await fixture.close()
    }

    @Test func aWorkerThatPollsOnceAMinuteMissesNoJobAndClaimsOncePerLoneJob() async throws {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["quiet", "busy", "capped"])
        let claims = Atomic<Int>(0)
        let worker = fixture.makeWorker(simulator: try WhatsAppSimulator()) {
            $0.pollInterval = .seconds(60)
            $0.afterClaim = { claims.add(1, ordering: .relaxed) }
        }
        var sent = 0
        let (done, error) = try await runUntil(worker) {
            // Lone jobs, one at a time (each NOTIFY wakes the worker once).
            if sent < 10, try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'") == sent {
                try await fixture.enqueueTexts(count: 1, sessions: ["quiet"], chatsPerSession: 1)
                sent += 1
                return false
            }
            guard sent == 10 else { return false }
            return try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'") == 10
        }
        #expect(done && error == nil)
        // One claim when it starts and one when its listener is subscribed, one per job, and a
        // few to spare for a listener that reconnects on a loaded machine (13 seen); before, one
        // more after each write (21).
        #expect(claims.load(ordering: .relaxed) <= 15, "\(claims.load(ordering: .relaxed)) claims for 10 lone jobs")

        // Backlogs only writes can wake: chats longer than a run, and a session of one slot.
        try await fixture.enqueueTexts(count: 25, sessions: ["busy"], chatsPerSession: 1)
        try await fixture.enqueueTexts(count: 36, sessions: ["capped"], chatsPerSession: 3)
        let second = fixture.makeWorker(simulator: try WhatsAppSimulator()) { $0.pollInterval = .seconds(60) }
        let (drained, failure) = try await runUntil(second, limit: .seconds(30)) {
            try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'") == 71
        }
        #expect(failure == nil)
        let left = try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state <> 'succeeded'")
        #expect(drained, "jobs left waiting for a poll: \(left)")

        // A worker with room for two jobs, and twenty ready in as many sessions: each write frees
        // nothing anyone waited for, but the worker's own room.
        let many = (0..<20).map { "room\($0)" }
        try await fixture.addSessions(many)
        try await fixture.enqueueTexts(count: 20, sessions: many, chatsPerSession: 1)
        let narrow = fixture.makeWorker(simulator: try WhatsAppSimulator()) {
            $0.pollInterval = .seconds(60)
            $0.concurrency = 2
        }
        let (roomy, stopped) = try await runUntil(narrow, limit: .seconds(30)) {
            try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'") == 91
        }
        #expect(stopped == nil)
        #expect(roomy, "a worker out of room did not claim again when it had room")
        await fixture.close()
    }
}
