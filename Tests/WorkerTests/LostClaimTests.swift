import Foundation
import OutboxCore
import OutboxStore
import PostgresClient
import Testing
import TestSupport

/// A claim whose answer was lost (its `COMMIT` sent in the same round trip, the connection broken
/// before the answer): `ClaimQuery.lostClaim` ends the claim's backend before it searches, so what
/// it finds is final, whether the claim had committed or was still running.
@Suite("Lost claims")
struct LostClaimTests {
    static func setUp() async throws -> Fixture {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["s1", "s2"], maxInFlight: 4)
        try await fixture.enqueueTexts(count: 12, sessions: ["s1", "s2"], chatsPerSession: 2)
        return fixture
    }

    /// A claim still open on the server when the search runs: without ending its backend first,
    /// the search found nothing and the claim committed afterwards, its jobs running with nobody to
    /// send them or hand them back.
    @Test func aClaimStillRunningIsEndedBeforeTheSearch() async throws {
        let fixture = try await Self.setUp()
        let (worker, token) = (UUID(), UUID())
        let claimer = try await PostgresConnection.connect(PostgresConfiguration(fixture.url), logger: TestEnvironment.logger)
        try await claimer.execute("BEGIN")
        let taken = try ClaimQuery.batch(from: try await claimer.query(ClaimQuery.query(workerID: worker, token: token, limit: 10, runs: RunTests.runs)))
        #expect(taken.jobs.count == 12)

        let found = try await fixture.database.withConnection {
            try await ClaimQuery.lostClaim(token: token, workerID: worker, backend: claimer.backend, on: $0)
        }
        #expect(found.isEmpty)
        await #expect(throws: PostgresError.self) { try await claimer.execute("COMMIT") }
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state <> 'queued'") == 0)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.lanes WHERE busy") == 0)
        #expect(try await fixture.count("SELECT sum(in_flight)::int8 FROM wa_outbox.sessions") == 0)
        await claimer.close()
        await fixture.close()
    }

    /// A backend is named by its process id and start time: a process that reused the id (here,
    /// the same process named with another start) is left alone; the one named is ended.
    @Test func onlyTheNamedBackendIsEnded() async throws {
        let fixture = try await Fixture.make()
        let bystander = try await PostgresConnection.connect(PostgresConfiguration(fixture.url), logger: TestEnvironment.logger)
        #expect(try await bystander.query("SELECT pg_backend_pid()").first?.decode(Int32.self, at: 0) == bystander.backend.pid)
        let reused = PostgresBackend(pid: bystander.backend.pid, startedMicroseconds: bystander.backend.startedMicroseconds - 1)
        _ = try await fixture.database.withConnection { try await ClaimQuery.lostClaim(token: UUID(), workerID: UUID(), backend: reused, on: $0) }
        #expect(try await bystander.query("SELECT 1").count == 1)
        _ = try await fixture.database.withConnection { try await ClaimQuery.lostClaim(token: UUID(), workerID: UUID(), backend: bystander.backend, on: $0) }
        await #expect(throws: PostgresError.self) { try await bystander.query("SELECT 1") }
        await bystander.close()
        await fixture.close()
    }

    /// A claim that committed: every job it took is found by its token, runs included, and no other.
    @Test func aClaimThatCommittedIsFoundWholeByItsToken() async throws {
        let fixture = try await Self.setUp()
        let (worker, token) = (UUID(), UUID())
        let claimer = try await PostgresConnection.connect(PostgresConfiguration(fixture.url), logger: TestEnvironment.logger)
        let taken = try ClaimQuery.batch(from: try await claimer.queryGenericPlan(ClaimQuery.query(workerID: worker, token: token, limit: 10, runs: RunTests.runs)))
        #expect(taken.jobs.count == 12 && taken.lanes == 4)

        let found = try await fixture.database.withConnection {
            try await ClaimQuery.lostClaim(token: token, workerID: worker, backend: claimer.backend, on: $0)
        }
        #expect(Set(found) == Set(taken.jobs.map(\.id)) && found.count == 12)
        #expect(try await fixture.database.withConnection {
            try await ClaimQuery.lostClaim(token: UUID(), workerID: worker, backend: .none, on: $0)
        }.isEmpty)
        await claimer.close()
        await fixture.close()
    }
}
