import Foundation
import OutboxCore
import OutboxStore
import PostgresClient
import Testing
import TestSupport
@testable import Worker

/// The claim's candidate scan where sessions' ready chats lie together, as a campaign's do: 20
/// sessions of one slot, each with 40 one-job chats enqueued one session after another. A scan of
/// four lanes per session asked for sees one or two sessions, and a claim gets one or two slots;
/// the worker widens its scan while its claims find too few sessions (`CandidateScan`).
@Suite("The claim's candidate scan")
struct CandidateScanTests {
    let worker = UUID()

    func claim(_ fixture: Fixture, sessions: Int, candidates: Int) async throws -> ClaimQuery.Batch {
        try await fixture.database.withConnection {
            try await ClaimQuery.claim(workerID: worker, limit: 500, runs: RunTests.runs, jobs: 500, sessions: sessions,
                                       candidates: candidates, on: $0)
        }
    }

    @Test func aWiderScanFindsTheSessionsBehindACampaign() async throws {
        let fixture = try await Fixture.make()
        let sessions = (1...20).map { "campaign\($0)" }
        try await fixture.addSessions(sessions)
        for session in sessions {
            try await fixture.enqueueTexts(count: 40, sessions: [session], chatsPerSession: 40)
        }

        // Four lanes per session asked for: 80 lanes, all of the first two sessions.
        let narrow = try await claim(fixture, sessions: 20, candidates: 80)
        #expect(narrow.candidateSessions == 2)
        #expect(narrow.candidateLanes == 80, "cut short by its size")
        #expect(Set(narrow.jobs.map(\.sessionID)) == ["campaign1", "campaign2"])
        #expect(narrow.jobs.count == 20, "a slot of ten chats each")

        // Wide enough for every session: the two busy ones are skipped, the other 18 give a slot each.
        let wide = try await claim(fixture, sessions: 20, candidates: 800)
        #expect(wide.candidateSessions == 18)
        #expect(wide.candidateLanes == 720, "every ready lane of the 18 runnable sessions: a wider scan would find no more")
        #expect(Set(wide.jobs.map(\.sessionID)) == Set(sessions.dropFirst(2)))
        #expect(wide.jobs.count == 180)
        await fixture.close()
    }

    @Test func theWorkerWidensItsScanWhileClaimsFindTooFewSessionsAndNarrowsItAgain() {
        var scan = CandidateScan()
        #expect(scan.lanes(sessions: 50, budget: 500) == 200)
        // A campaign of many sessions: each widening finds more of them.
        for (found, width) in [(2, 400), (4, 800), (8, 1_600), (16, 3_200), (20, 5_000)] {
            scan.found(found, of: 50, scanned: scan.lanes(sessions: 50, budget: 500), limit: scan.lanes(sessions: 50, budget: 500))
            #expect(scan.lanes(sessions: 50, budget: 500) == width, "at most ten lanes per job of the budget")
        }
        #expect(scan.lanes(sessions: 10, budget: 500) == 1_280, "at most 128 lanes per session")
        scan.found(30, of: 50, scanned: 5_000, limit: 5_000)
        #expect(scan.perSession == 128, "more than half found: it stays")
        scan.found(50, of: 50, scanned: 5_000, limit: 5_000)
        #expect(scan.perSession == 64, "all found: it narrows")

        // A scan that saw every ready lane: widening cannot help.
        scan.found(1, of: 50, scanned: 120, limit: 3_200)
        #expect(scan.perSession == 32)

        // One campaign alone: a wider scan finds no second session, so it steps back.
        var alone = CandidateScan()
        alone.found(1, of: 5, scanned: 20, limit: 20)
        #expect(alone.perSession == 8)
        alone.found(1, of: 5, scanned: 40, limit: 40)
        #expect(alone.perSession == 4)
        #expect(alone.lanes(sessions: 0, budget: 0) == 4)
    }
}
