import Foundation
import OutboxStore
import PostgresClient
import Testing

/// The claim changes no indexed column of a job, so PostgreSQL can write its new row version
/// without an index entry (a HOT update), but only on the job's own page. Migration 0023 keeps
/// room for it. Before, at fillfactor 80, about 62% of a drain's claims moved their job to another
/// page and wrote an entry into every index on jobs.
@Suite("Row versions")
struct RowVersionTests {
    @Test func theClaimRewritesEachJobOnItsOwnPage() async throws {
        let fixture = try await Fixture.make()
        let sessions = (1...4).map { "room\($0)" }
        try await fixture.addSessions(sessions, maxInFlight: 1_000)
        // Payloads the size of a real short message, so a page holds as many jobs as it would.
        try await fixture.enqueueTexts(count: 2_000, sessions: sessions, chatsPerSession: 50)
        try await fixture.database.query("""
            UPDATE wa_outbox.jobs SET payload = payload || jsonb_build_object('text', repeat('x', 120) || id)
            """)
        try await fixture.database.query("VACUUM FULL wa_outbox.jobs")
        let pagesBefore = try await pages(fixture.database)
        #expect(pagesBefore.count == 2_000)

        let worker = UUID()
        var claimed = 0
        while true {
            let batch = try await fixture.database.withConnection {
                try await ClaimQuery.claim(workerID: worker, limit: 500, runs: .runs(pacedByDefault: false, defaultBurst: nil), on: $0)
            }
            if batch.jobs.isEmpty { break }
            claimed += batch.jobs.count
        }
        #expect(claimed == 2_000)

        let pagesAfter = try await pages(fixture.database)
        let stayed = pagesBefore.filter { pagesAfter[$0.key] == $0.value }.count
        // Every claimed version fits beside the queued one; a few may not where a page's rows are
        // longer than these.
        #expect(stayed >= 1_950, "only \(stayed) of 2,000 claimed jobs stayed on their page")
        await fixture.close()
    }

    /// Each job's page: the block number of its current row version.
    func pages(_ database: PostgresDatabase) async throws -> [Int64: Int64] {
        var pages: [Int64: Int64] = [:]
        for row in try await database.query("SELECT id, (ctid::text::point)[0]::int8 FROM wa_outbox.jobs") {
            pages[try row.decode(Int64.self, at: 0)] = try row.decode(Int64.self, at: 1)
        }
        return pages
    }
}
