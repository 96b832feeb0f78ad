import Foundation
import OutboxCore
import OutboxStore
import PostgresClient
import Simulator
import Testing
import TestSupport

/// Runs of a chat's sends (issue #21): what a claim takes, when the lane is free again, what the
/// rescue and a worker do with them, and that per-chat order and exactly one delivery still hold.
@Suite("Runs of a chat's sends")
struct RunTests {
    static let runs = RunLimit(length: 10, pacedByDefault: false, defaultBurst: 10)

    func claim(_ fixture: Fixture, worker: UUID, limit: Int = 10, runs: RunLimit = RunTests.runs) async throws -> [ClaimedJob] {
        try await fixture.database.withConnection { try await ClaimQuery.claim(workerID: worker, limit: limit, runs: runs, on: $0) }.jobs
    }

    func complete(_ fixture: Fixture, _ jobs: some Collection<ClaimedJob>, worker: UUID, _ outcome: Outcome = .succeeded) async throws -> Int {
        try await fixture.database.withConnection { connection in
            try await CompletionQuery.complete(jobs.map { Completion(jobID: $0.id, claim: $0.claim, workerID: worker, outcome: outcome) }, on: connection)
        }.count
    }

    func lane(_ fixture: Fixture, session: String) async throws -> (busy: Bool, runLeft: Int, ready: Bool, inFlight: Int) {
        let row = try await fixture.database.query("""
            SELECT l.busy, l.run_left::int8, l.ready_at IS NOT NULL, s.in_flight::int8
            FROM wa_outbox.lanes l JOIN wa_outbox.sessions s ON s.id = l.session_id WHERE l.session_id = \(session)
            """)[0]
        return (try row.decode(at: 0), try row.decode(at: 1), try row.decode(at: 2), try row.decode(at: 3))
    }

    /// A claim takes the chat's first ten sends in order, as one run counted once in its session;
    /// the lane stays busy through a completion of part of the run and is free after the last.
    @Test func aRunIsTheChatsNextSendsAndItsLaneIsFreeOnlyAfterItsLastJob() async throws {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["r"])
        try await fixture.enqueueTexts(count: 15, sessions: ["r"], chatsPerSession: 1)
        let worker = UUID()

        let run = try await claim(fixture, worker: worker)
        let queued = try await fixture.database.query("SELECT id FROM wa_outbox.jobs ORDER BY id").map { try $0.decode(Int64.self, at: 0) }
        #expect(run.map(\.id) == Array(queued.prefix(10)))
        var lane = try await lane(fixture, session: "r")
        #expect(lane.busy && lane.runLeft == 10 && !lane.ready && lane.inFlight == 1)

        #expect(try await complete(fixture, run.prefix(4), worker: worker) == 4)
        lane = try await self.lane(fixture, session: "r")
        #expect(lane.busy && lane.runLeft == 6 && !lane.ready && lane.inFlight == 1, "freed after 4 of 10: \(lane)")
        #expect(try await claim(fixture, worker: worker).isEmpty, "the chat's next jobs were claimed while its run went on")

        #expect(try await complete(fixture, run.dropFirst(4), worker: worker) == 6)
        lane = try await self.lane(fixture, session: "r")
        #expect(!lane.busy && lane.runLeft == 0 && lane.ready && lane.inFlight == 0)
        let rest = try await claim(fixture, worker: worker)
        #expect(rest.map(\.id) == Array(queued.suffix(5)))

        // The events follow the completions' order, so a run's statuses come in its order.
        #expect(try await complete(fixture, rest.reversed(), worker: worker) == 5)
        let events = try await fixture.database.query("SELECT job_id FROM wa_outbox.events WHERE status = 'sent' ORDER BY id")
            .map { try $0.decode(Int64.self, at: 0) }
        #expect(events == Array(queued.prefix(10)) + queued.suffix(5).reversed())
        await fixture.close()
    }

    /// A run is only due sends: it ends before an edit or revoke and before a job waiting out a
    /// retry; a paced session, or a claim without runs, takes one job a chat.
    @Test func aRunStopsBeforeAnythingButADueSendAndNeverFormsWhereSendsCannotGoBackToBack() async throws {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["edit", "later", "paced", "single"])
        for session in ["edit", "later", "paced", "single"] {
            try await fixture.enqueueTexts(count: 5, sessions: [session], chatsPerSession: 1)
        }
        try await fixture.database.query("""
            UPDATE wa_outbox.jobs SET kind = 'edit'
            WHERE id = (SELECT id FROM wa_outbox.jobs WHERE session_id = 'edit' ORDER BY id OFFSET 2 LIMIT 1)
            """)
        try await fixture.database.query("""
            UPDATE wa_outbox.jobs SET available_at = now() + interval '1 hour'
            WHERE id = (SELECT id FROM wa_outbox.jobs WHERE session_id = 'later' ORDER BY id OFFSET 2 LIMIT 1)
            """)
        try await fixture.database.query("UPDATE wa_outbox.sessions SET pacing = true WHERE id = 'paced'")

        let worker = UUID()
        try await fixture.database.query("UPDATE wa_outbox.sessions SET state = 'paused' WHERE id = 'single'")
        var taken = try await claim(fixture, worker: worker)
        try await fixture.database.query("UPDATE wa_outbox.sessions SET state = 'active' WHERE id = 'single'")
        taken += try await fixture.database.withConnection { try await ClaimQuery.claim(workerID: worker, limit: 10, on: $0) }.jobs
        let perSession = Dictionary(grouping: taken, by: \.sessionID).mapValues(\.count)
        #expect(perSession == ["edit": 2, "later": 2, "paced": 1, "single": 1])
        // Without a Redis admission (nothing limited) the worker's runs ignore the defaults.
        #expect(RunLimit.runs(pacedByDefault: nil, defaultBurst: nil) == RunLimit(length: RunLimit.longest, pacedByDefault: false, defaultBurst: RunLimit.longest))
        await fixture.close()
    }

    /// A claim's budget of jobs cuts runs lane by lane: every lane it took gets a prefix of its
    /// queue (its head first), and a lane it could not fit stays ready, untouched.
    @Test func theJobBudgetCutsTheLastRunNeverAHead() async throws {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["cut"], maxInFlight: 3)
        try await fixture.enqueueTexts(count: 30, sessions: ["cut"], chatsPerSession: 3)
        let taken = try await fixture.database.withConnection {
            try await ClaimQuery.claim(workerID: UUID(), limit: 3, runs: RunTests.runs, jobs: 15, on: $0)
        }.jobs
        #expect(taken.count == 15)
        var queues: [String: [Int64]] = [:]
        for row in try await fixture.database.query("SELECT chat, id FROM wa_outbox.jobs ORDER BY run_at, id") {
            queues[try row.decode(String.self, at: 0), default: []].append(try row.decode(Int64.self, at: 1))
        }
        let byChat = Dictionary(grouping: taken, by: \.chat)
        for (chat, jobs) in byChat {
            #expect(jobs.map(\.id) == Array(queues[chat, default: []].prefix(jobs.count)), "chat \(chat) got \(jobs.map(\.id))")
        }
        #expect(byChat.values.map(\.count).sorted() == [5, 10])
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.lanes WHERE busy") == 2)
        #expect(try await fixture.count("SELECT sum(run_left)::int8 FROM wa_outbox.lanes") == 15)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.lanes WHERE NOT busy AND ready_at IS NOT NULL") == 1)
        await fixture.close()
    }

    /// A dead worker's run goes back whole: each of its jobs may have been sent (results wait in
    /// the worker's buffer), so each is requeued as `worker_lost`, and the lane and session are free.
    @Test func theRescueRequeuesEveryJobOfADeadWorkersRun() async throws {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["dead"])
        try await fixture.enqueueTexts(count: 10, sessions: ["dead"], chatsPerSession: 1)
        let run = try await claim(fixture, worker: UUID())  // a worker with no lease at all
        #expect(run.count == 10)

        let rescued = try await fixture.database.withConnection { try await RescueQuery.rescue(on: $0) }
        #expect(Set(rescued.map(\.jobID)) == Set(run.map(\.id)))
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'queued' AND maybe_sent AND error_code = 'worker_lost'") == 10)
        let lane = try await lane(fixture, session: "dead")
        #expect(!lane.busy && lane.ready && lane.inFlight == 0)
        #expect(try await claim(fixture, worker: UUID()).count == 10)
        await fixture.close()
    }

    /// A worker sends runs with failures in them: a retried job holds back the rest of its run
    /// without spending their attempts, every message is delivered once, in its chat's order, and
    /// each chat's statuses come in that order too.
    @Test func aWorkerSendsRunsInOrderThroughRetries() async throws {
        let fixture = try await Fixture.make()
        let sessions = (0..<10).map { "w\($0)" }
        try await fixture.addSessions(sessions)
        try await fixture.enqueueTexts(count: 1_000, sessions: sessions, chatsPerSession: 4)
        try await fixture.database.query("UPDATE wa_outbox.jobs SET max_attempts = 30")
        var configuration = SimulatorConfiguration()
        configuration.transientFailureRate = 0.2
        let deliveries = try await fixture.drainLoggingDeliveries(configuration, name: "runs")
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'") == 1_000)
        // Each failed attempt is one retry event: the jobs held back behind it spent none.
        let attempts = try await fixture.count("SELECT sum(attempts)::int8 FROM wa_outbox.jobs")
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.events WHERE status = 'retrying'") == attempts - 1_000)
        #expect(attempts > 1_100 && attempts < 1_500, "20% of attempts fail: \(attempts) attempts")
        let outOfOrder = try await fixture.count("""
            SELECT count(*) FROM (
                SELECT j.id < lag(j.id) OVER (PARTITION BY j.session_id, j.chat ORDER BY e.id) AS backwards
                FROM wa_outbox.events e JOIN wa_outbox.jobs j ON j.id = e.job_id WHERE e.status = 'sent'
            ) x WHERE backwards
            """)
        #expect(outOfOrder == 0)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.lanes WHERE busy OR run_left > 0") == 0)
        #expect(try await fixture.count("SELECT coalesce(sum(in_flight), 0)::int8 FROM wa_outbox.sessions") == 0)
        await fixture.close()
    }
}
