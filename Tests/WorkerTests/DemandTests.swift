import Foundation
import OutboxStore
import PostgresClient
import Testing
import TestSupport

/// `wa_outbox.runnable_demand()` (migrations/0013): what the workers are scaled on. It counts the
/// dispatches that could start now, not the jobs that wait.
@Suite("Autoscaling: the demand for dispatch slots")
struct DemandTests {
    struct Demand: Equatable, CustomStringConvertible {
        var runnable: Int
        var dispatch: Int
        var description: String { "runnable \(runnable), dispatch \(dispatch)" }
    }

    func demand(_ fixture: Fixture) async throws -> Demand {
        let row = try await fixture.database.query("SELECT wa_outbox.runnable_demand(), wa_outbox.dispatch_demand()")[0]
        return Demand(runnable: try row.decode(at: 0), dispatch: try row.decode(at: 1))
    }

    func setSession(_ fixture: Fixture, _ id: String, state: String = "active", engineStatus: String) async throws {
        try await fixture.database.query("""
            UPDATE wa_outbox.sessions SET state = \(state), engine_status = \(engineStatus) WHERE id = \(id)
            """)
    }

    @Test func tenThousandJobsOfOneSessionWithOneSlotAreADemandOfOne() async throws {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["solo"], maxInFlight: 1)
        try await setSession(fixture, "solo", engineStatus: "connected")
        // 10,000 jobs in 50 chats: 50 ready lanes, one free slot.
        try await fixture.enqueueTexts(count: 10_000, sessions: ["solo"], chatsPerSession: 50)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'queued'") == 10_000)
        #expect(try await demand(fixture) == Demand(runnable: 1, dispatch: 1))

        // More slots than chats: a chat's lane counts once whatever its backlog (one job per chat at a time).
        try await fixture.database.query("UPDATE wa_outbox.sessions SET max_in_flight = 200 WHERE id = 'solo'")
        #expect(try await demand(fixture) == Demand(runnable: 50, dispatch: 50))

        // Claimed work leaves the runnable demand and stays in the dispatch demand, so an
        // autoscaler does not shrink the fleet under its running jobs.
        try await fixture.database.query("UPDATE wa_outbox.sessions SET max_in_flight = 1 WHERE id = 'solo'")
        let claimed = try await fixture.database.withConnection { try await ClaimQuery.claim(workerID: UUID(), limit: 100, on: $0) }
        #expect(claimed.jobs.count == 1)
        #expect(try await demand(fixture) == Demand(runnable: 0, dispatch: 1))
        let gauges = try await fixture.database.withConnection { try await QueueGauges.read(on: $0) }
        #expect(gauges.runnableDemand == 0 && gauges.dispatchDemand == 1 && gauges.queued == 9_999)
        await fixture.close()
    }

    /// A session of one slot that took ten chats in one claim (a slot, `SlotTests`) sends one
    /// message at a time: a dispatch demand of one, not ten.
    @Test func aSlotOfTenChatsIsADemandOfOne() async throws {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["slot"], maxInFlight: 1)
        try await setSession(fixture, "slot", engineStatus: "connected")
        try await fixture.enqueueTexts(count: 50, sessions: ["slot"], chatsPerSession: 50)
        let claimed = try await fixture.database.withConnection { try await ClaimQuery.claim(workerID: UUID(), limit: 100, runs: RunTests.runs, on: $0) }
        #expect(claimed.jobs.count == 10 && claimed.lanes == 10)
        #expect(try await fixture.count("SELECT in_flight::int8 FROM wa_outbox.sessions") == 10)
        #expect(try await demand(fixture) == Demand(runnable: 0, dispatch: 1))
        let gauges = try await fixture.database.withConnection { try await QueueGauges.read(on: $0) }
        #expect(gauges.runnableDemand == 0 && gauges.dispatchDemand == 1 && gauges.queued == 40)
        await fixture.close()
    }

    @Test func aHundredConnectedSessionsWithWorkAreADemandOfAHundred() async throws {
        let fixture = try await Fixture.make()
        let sessions = (1...100).map { "s\($0)" }
        try await fixture.addSessions(sessions, maxInFlight: 3)
        try await fixture.database.query("UPDATE wa_outbox.sessions SET engine_status = 'connected'")
        // One chat each, ten jobs per chat: three free slots per session, one ready lane.
        try await fixture.enqueueTexts(count: 1_000, sessions: sessions, chatsPerSession: 1)
        #expect(try await demand(fixture) == Demand(runnable: 100, dispatch: 100))
        let gauges = try await fixture.database.withConnection { try await QueueGauges.read(on: $0) }
        #expect(gauges.runnableDemand == 100 && gauges.dispatchDemand == 100)
        // Sessions without work add nothing.
        try await fixture.addSessions(["idle1", "idle2"], maxInFlight: 10)
        #expect(try await demand(fixture).runnable == 100)
        await fixture.close()
    }

    @Test func aPausedOrDisconnectedSessionIsNoDemand() async throws {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["p"], maxInFlight: 5)
        try await fixture.enqueueTexts(count: 500, sessions: ["p"], chatsPerSession: 10)
        // Not asked yet ('unknown') counts, as the claim takes such a session.
        #expect(try await demand(fixture).runnable == 5)

        try await setSession(fixture, "p", state: "paused", engineStatus: "connected")
        #expect(try await demand(fixture) == Demand(runnable: 0, dispatch: 0))
        try await setSession(fixture, "p", state: "restricted", engineStatus: "connected")
        #expect(try await demand(fixture) == Demand(runnable: 0, dispatch: 0))
        try await setSession(fixture, "p", engineStatus: "disconnected")
        #expect(try await demand(fixture) == Demand(runnable: 0, dispatch: 0))
        try await setSession(fixture, "p", engineStatus: "connecting")
        #expect(try await demand(fixture) == Demand(runnable: 0, dispatch: 0))
        // Waiting out a rate limit: nothing can start before not_before.
        try await setSession(fixture, "p", engineStatus: "connected")
        try await fixture.database.query("UPDATE wa_outbox.sessions SET not_before = now() + interval '1 hour' WHERE id = 'p'")
        #expect(try await demand(fixture) == Demand(runnable: 0, dispatch: 0))
        try await fixture.database.query("UPDATE wa_outbox.sessions SET not_before = '-infinity' WHERE id = 'p'")
        #expect(try await demand(fixture) == Demand(runnable: 5, dispatch: 5))
        // Lanes whose head is not due (a retry's backoff) wait too.
        try await fixture.database.query("UPDATE wa_outbox.lanes SET ready_at = now() + interval '1 hour' WHERE session_id = 'p'")
        #expect(try await demand(fixture) == Demand(runnable: 0, dispatch: 0))
        await fixture.close()
    }
}
