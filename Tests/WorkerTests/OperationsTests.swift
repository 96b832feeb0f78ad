import Engines
import Foundation
import OutboxCore
import OutboxStore
import PostgresClient
import Simulator
import Testing
import TestSupport

/// What `wa-outbox jobs show` prints, as much as the tests read.
struct ShownJob: Decodable {
    struct Entry: Decodable { var reason: String; var actor: String }
    struct Event: Decodable { var status: String }
    var audit: [Entry]
    var events: [Event]
}

@Suite("Operators: replay and cancel")
struct OperationsTests {
    @Test func replayingAThousandFailedJobsRunsEachOnceAfterTheFix() async throws {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["broken", "healthy"])
        try await fixture.enqueueTexts(count: 1_000, sessions: ["broken"], chatsPerSession: 20)
        try await fixture.enqueueTexts(count: 50, sessions: ["healthy"], chatsPerSession: 5)
        let simulator = try WhatsAppSimulator()
        simulator.setCredentialsValid(false, session: "broken")  // the engine refuses the session's token
        try await fixture.drain(simulator: simulator)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'failed'") == 1_000)

        // The operator's commands, as run at 3 a.m.
        let cli = try TestEnvironment.executable()
        let dryRun = try await Subprocess.run(cli, ["jobs", "replay", "--database-url", fixture.url, "--state", "failed",
                                                    "--session", "broken", "--reason", "token fixed", "--dry-run"])
        #expect(dryRun.status == 0)
        #expect(dryRun.output.hasPrefix("would replay 1000 jobs"))
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'failed'") == 1_000)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.audit") == 0)

        simulator.setCredentialsValid(true, session: "broken")  // the token is fixed
        let replay = try await Subprocess.run(cli, ["jobs", "replay", "--database-url", fixture.url, "--state", "failed",
                                                    "--session", "broken", "--reason", "token fixed", "--actor", "ops"])
        #expect(replay.status == 0)
        #expect(replay.output.contains("replayed 1000 jobs"))
        try await fixture.drain(simulator: simulator)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'") == 1_050)
        #expect(simulator.stats.delivered == 1_050)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.audit WHERE action = 'replay'") == 1_000)
        let firstReplayed = try await fixture.count("SELECT min(job_id) FROM wa_outbox.audit")
        let show = try await Subprocess.run(cli, ["jobs", "show", "--database-url", fixture.url, String(firstReplayed)])
        let detail = try JSONDecoder().decode(ShownJob.self, from: Data(show.output.utf8))
        #expect(detail.audit.map(\.reason) == ["token fixed"])
        #expect(detail.audit.map(\.actor) == ["ops"])
        #expect(detail.events.map(\.status) == ["queued", "failed", "queued", "sent"])
        #expect(!show.output.contains("message "))  // the body is hidden unless asked for
        await fixture.close()
    }

    @Test func replayingASendThatHadArrivedDoesNotDeliverItTwice() async throws {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["s"])
        let sent = try await Outbox.enqueue(EnqueueRequest(org: "org1", session: "s", kind: .send,
                                                           payload: #"{"type":"text","chat":"4915112345678@s.whatsapp.net","text":"hi"}"#), in: fixture.database)
        try await fixture.database.query("UPDATE wa_outbox.jobs SET max_attempts = 1")
        // Delivered, but the answer is lost: with one attempt allowed, the job is marked failed.
        var configuration = SimulatorConfiguration()
        configuration.ambiguousTimeoutRate = 1
        let flaky = try WhatsAppSimulator(configuration: configuration)
        try await fixture.drain(simulator: flaky)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'failed' AND error_code = 'timeout'") == 1)
        #expect(flaky.stats.delivered == 1)

        try await JobQueries.replay([Int64(sent.outboxId)!], actor: "ops", reason: "timeouts", newMessageID: false, in: fixture.database)
        // The resend reaches the same WhatsApp with the same id: suppressed, not delivered again.
        try await fixture.drain(simulator: flaky)
        #expect(flaky.stats.delivered == 1)
        #expect(flaky.stats.suppressedDuplicates >= 1)
        await fixture.close()
    }

    @Test func cancelTakesQueuedJobsAndLeavesTheChatMoving() async throws {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["s"])
        try await fixture.enqueueTexts(count: 10, sessions: ["s"], chatsPerSession: 1)
        var filter = JobFilter()
        filter.ids = [1, 2, 3]
        let report = try await JobQueries.cancel(filter, actor: "ops", reason: "customer asked", in: fixture.database)
        #expect(report.done.sorted() == [1, 2, 3])
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.events WHERE status = 'canceled'") == 3)
        let simulator = try WhatsAppSimulator()
        try await fixture.drain(simulator: simulator)
        #expect(simulator.stats.delivered == 7)
        #expect(try await fixture.count("SELECT coalesce(sum(pending), 0)::int8 FROM wa_outbox.lanes") == 0)
        let again = try await JobQueries.cancel(filter, actor: "ops", reason: "twice", in: fixture.database)
        #expect(again.done.isEmpty)
        #expect(again.skipped.count == 3)
        await fixture.close()
    }

    /// Session "race" with one chat of two queued jobs; their ids in order.
    static func oneChatWithTwoJobs() async throws -> (Fixture, [Int64]) {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["race"])
        try await fixture.enqueueTexts(count: 2, sessions: ["race"], chatsPerSession: 1)
        return (fixture, try await fixture.database.query("SELECT id FROM wa_outbox.jobs ORDER BY id").map { try $0.decode(Int64.self, at: 0) })
    }

    /// A claim finds a chat's head in its snapshot. When a transaction that committed after that
    /// snapshot took the head out of the queue (a cancel, or the lane's previous claim and
    /// completion), the claim must not hand it out: before the fix it set the canceled job back to
    /// `running` and a worker sent it. Here the cancel is held open, so the claim is certain to meet
    /// it: the claim waits on its row lock and sees it committed.
    @Test func aJobCanceledWhileAClaimRunsIsNeverHandedOut() async throws {
        let (fixture, ids) = try await Self.oneChatWithTwoJobs()
        let canceler = try await fixture.openTransaction("UPDATE wa_outbox.jobs SET state = 'canceled', finished_at = now() WHERE id = \(ids[0])")

        let worker = UUID()
        let claim = Task { try await fixture.database.withConnection { try await ClaimQuery.claim(workerID: worker, limit: 10, on: $0) } }
        #expect(try await fixture.backendsWaitingOnALock(inStatementsContaining: "candidate_sessions") == 1, "the claim never waited on the canceled job")
        try await canceler.execute("COMMIT")
        await canceler.close()

        let first = try await claim.value
        #expect(first.jobs.isEmpty)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE id = \(ids[0]) AND state = 'canceled'") == 1)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.lanes WHERE busy") == 0)
        #expect(try await fixture.count("SELECT in_flight FROM wa_outbox.sessions WHERE id = 'race'") == 0)
        // The next claim takes the chat's real head.
        let second = try await fixture.database.withConnection { try await ClaimQuery.claim(workerID: worker, limit: 10, on: $0) }
        #expect(second.jobs.map(\.id) == [ids[1]])
        await fixture.close()
    }

    /// The health check never waits for a session row: a session a completion holds keeps its
    /// old status until the next check. Before, it waited, and at every worker's first check
    /// (which changes every session) it deadlocked with completions locking the same sessions in
    /// another order; PostgreSQL aborted one of them after a second.
    @Test func theHealthCheckNeverWaitsForASessionACompletionHolds() async throws {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["b", "a"])
        let holder = try await fixture.openTransaction("SELECT 1 FROM wa_outbox.sessions WHERE id = 'a' FOR UPDATE")
        let check = Task {
            try await fixture.database.withConnection { try await SessionHealth.record([("b", .connected), ("a", .connected)], on: $0) }
        }
        #expect(try await fixture.backendsWaitingOnALock(inStatementsContaining: "engine_status") == 0)
        try await holder.execute("COMMIT")
        await holder.close()
        try await check.value
        let connected = "SELECT count(*) FROM wa_outbox.sessions WHERE engine_status = 'connected' AND id = "
        #expect(try await fixture.count(connected + "'b'") == 1)
        #expect(try await fixture.count(connected + "'a'") == 0, "the check waited for session a")
        // The next check records it.
        try await fixture.database.withConnection { try await SessionHealth.record([("b", .connected), ("a", .connected)], on: $0) }
        #expect(try await fixture.count(connected + "'a'") == 1)
        await fixture.close()
    }

    /// A cancel and a claim lock a chat's lane and its head job in the same order, lane first.
    /// Before, a cancel locked the job and then waited on the lane while a claim held the lane and
    /// waited on the job: PostgreSQL broke the deadlock by aborting the claim after a second.
    @Test func aCancelWaitsForAClaimHoldingTheLaneWithoutDeadlock() async throws {
        let (fixture, ids) = try await Self.oneChatWithTwoJobs()
        // The claim's transaction, stopped after it locked the lane.
        let claimer = try await fixture.openTransaction("SELECT 1 FROM wa_outbox.lanes FOR UPDATE")

        var filter = JobFilter()
        filter.ids = [ids[0]]
        let cancel = Task { try await JobQueries.cancel(filter, actor: "ops", reason: "race", in: fixture.database) }
        #expect(try await fixture.backendsWaitingOnALock(inStatementsContaining: "wa_outbox.lanes") == 1, "the cancel never waited on the lane")
        // The cancel waits on the lane without holding the job.
        await #expect(throws: Never.self, "the cancel locked the job before the lane") {
            _ = try await fixture.database.query("SELECT id FROM wa_outbox.jobs WHERE id = \(ids[0]) FOR UPDATE NOWAIT")
        }

        // The claim goes on to take the head, and commits.
        let claimed = try await ClaimQuery.claim(workerID: UUID(), limit: 10, on: claimer)
        try await claimer.execute("COMMIT")
        await claimer.close()
        #expect(claimed.jobs.map(\.id) == [ids[0]])
        let report = try await cancel.value
        #expect(report.done.isEmpty)
        #expect(report.skipped.map(\.reason) == ["was claimed by a worker while canceling"])
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE id = \(ids[0]) AND state = 'running'") == 1)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.events WHERE status = 'canceled'") == 0)
        #expect(try await fixture.count("SELECT pending FROM wa_outbox.lanes") == 2)
        await fixture.close()
    }
}

@Suite("Operators: prune and stats")
struct MaintenanceTests {
    @Test func pruneDeletesOnlyFinishedWorkPastItsRetention() async throws {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["s"], maxInFlight: 10)
        try await fixture.enqueueTexts(count: 2_500, sessions: ["s"], chatsPerSession: 10)
        try await fixture.drain(simulator: try WhatsAppSimulator())
        try await fixture.enqueueTexts(count: 20, sessions: ["s"], chatsPerSession: 10)
        // 2,000 of the sent jobs (and all events so far) are old; the 20 new ones are queued.
        try await fixture.database.query("UPDATE wa_outbox.jobs SET finished_at = now() - interval '8 days' WHERE state = 'succeeded' AND id <= 2000")
        try await fixture.database.query("UPDATE wa_outbox.events SET created_at = now() - interval '8 days' WHERE job_id <= 2000")
        var retention = Retention()
        retention.batchSize = 300
        let report = try await Maintenance.prune(retention, in: fixture.database)
        #expect(report.ran)
        #expect(report.jobs == 2_000)
        #expect(report.events == 4_000)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs") == 520)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'queued'") == 20)
        let stats = try await QueueStats.read(from: fixture.database)
        #expect(stats.byState["queued"] == 20)
        #expect(stats.byState["succeeded"] == 500)
        #expect(stats.busiestSessions.first?.session == "s")
        #expect(stats.busiestSessions.first?.queued == 20)
        // The lanes the queued jobs need survive; the queue still drains.
        let simulator = try WhatsAppSimulator()
        try await fixture.drain(simulator: simulator)
        #expect(simulator.stats.delivered == 20)
        #expect(try await Maintenance.prune(retention, in: fixture.database).jobs == 0)
        await fixture.close()
    }

    @Test func onlyOneProcessPrunesAtATime() async throws {
        let fixture = try await Fixture.make()
        let holder = try await PostgresConnection.connect(PostgresConfiguration(fixture.url), logger: TestEnvironment.logger)
        try await holder.query("SELECT pg_advisory_lock(\(Int64(0x7761_7072_756e_6521)))")
        #expect(try await Maintenance.prune(Retention(), in: fixture.database).ran == false)
        // Unlock explicitly: a closed connection's backend may hold the lock a moment longer.
        try await holder.query("SELECT pg_advisory_unlock(\(Int64(0x7761_7072_756e_6521)))")
        await holder.close()
        #expect(try await Maintenance.prune(Retention(), in: fixture.database).ran)
        await fixture.close()
    }
}

@Suite("Operators: vacuum and gauges")
struct VacuumTests {
    /// Autovacuum looks once a minute by default; the workers look every 10 s. Here autovacuum is
    /// off for the table, so only `vacuumIfNeeded` can make the deleted rows' space reusable.
    @Test func deadJobRowsAreVacuumedByTheWorkersOneProcessAtATime() async throws {
        let fixture = try await Fixture.make()
        try await fixture.database.query("ALTER TABLE wa_outbox.jobs SET (autovacuum_enabled = false)")
        try await fixture.addSessions(["v"])
        try await fixture.enqueueTexts(count: 12_000, sessions: ["v"], chatsPerSession: 10)
        #expect(try await Maintenance.vacuumIfNeeded(in: fixture.database).contains("jobs") == false)
        try await fixture.database.withConnection { connection in
            try await connection.query("DELETE FROM wa_outbox.jobs")
            try await connection.query("SELECT pg_stat_force_next_flush()")
        }
        let deadRows = "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'wa_outbox.jobs'::regclass"
        for _ in 0..<50 where try await fixture.count(deadRows) < 12_000 {
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(try await fixture.count(deadRows) >= 12_000)

        // A worker whose role does not own the tables leaves them to autovacuum (PostgreSQL would
        // only skip them with a warning).
        // A role name is an identifier, not a value: built here from digits only, never bound.
        let role = "outbox_worker_\(UInt32.random(in: 0...UInt32.max))"
        try await fixture.database.query(PostgresQuery(String("CREATE ROLE \(role) LOGIN")))
        try await fixture.database.query(PostgresQuery(String("GRANT USAGE ON SCHEMA wa_outbox TO \(role)")))
        let other = PostgresDatabase(configuration: PostgresConfiguration(fixture.url.replacingOccurrences(of: "://postgres@", with: "://\(role)@")),
                                     maxConnections: 1, logger: TestEnvironment.logger)
        #expect(try await Maintenance.vacuumIfNeeded(in: other).isEmpty)
        await other.close()
        #expect(try await fixture.count(deadRows) >= 12_000)

        // Another process holds the vacuum lock: this one leaves it to that one.
        let holder = try await PostgresConnection.connect(PostgresConfiguration(fixture.url), logger: TestEnvironment.logger)
        try await holder.query("SELECT pg_advisory_lock(\(Int64(0x7761_7661_6375_756d)))")
        #expect(try await Maintenance.vacuumIfNeeded(in: fixture.database).isEmpty)
        try await holder.query("SELECT pg_advisory_unlock(\(Int64(0x7761_7661_6375_756d)))")
        await holder.close()

        #expect(try await Maintenance.vacuumIfNeeded(in: fixture.database).contains("jobs"))
        #expect(try await fixture.count("SELECT vacuum_count FROM pg_stat_user_tables WHERE relid = 'wa_outbox.jobs'::regclass") >= 1)
        #expect(try await fixture.count(deadRows) == 0)
        #expect(try await Maintenance.vacuumIfNeeded(in: fixture.database).isEmpty)
        try await fixture.database.query(PostgresQuery(String("DROP OWNED BY \(role)")))
        try await fixture.database.query(PostgresQuery(String("DROP ROLE \(role)")))
        await fixture.close()
    }

    @Test func theHeartbeatGaugesCountQueuedJobsAndTheOldestHeadsAge() async throws {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["g1", "g2"])
        let empty = try await fixture.database.withConnection { try await QueueGauges.read(on: $0) }
        #expect(empty == QueueGauges(queued: 0, oldestQueuedSeconds: 0))
        try await fixture.enqueueTexts(count: 300, sessions: ["g1", "g2"], chatsPerSession: 3)
        // Two jobs running (one per session): in flight, not queued.
        let claimed = try await fixture.database.withConnection { try await ClaimQuery.claim(workerID: UUID(), limit: 10, on: $0) }
        #expect(claimed.jobs.count == 2)
        // The oldest queued job heads its chat's lane (one statement enqueued them all, so a chat's
        // order is id order); make it 90 s old.
        try await fixture.database.query("""
            UPDATE wa_outbox.jobs SET created_at = now() - interval '90 seconds'
            WHERE id = (SELECT min(id) FROM wa_outbox.jobs WHERE state = 'queued')
            """)
        let gauges = try await fixture.database.withConnection { try await QueueGauges.read(on: $0) }
        #expect(gauges.queued == 298)
        let queued = try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'queued'")
        #expect(gauges.queued == queued)
        #expect(gauges.oldestQueuedSeconds >= 90 && gauges.oldestQueuedSeconds < 120)
        await fixture.close()
    }
}

@Suite("Operators: the session registry")
struct SessionRegistryCLITests {
    @Test func sessionsAreAddedShownChangedAndRemovedThroughTheCLI() async throws {
        let fixture = try await Fixture.make()
        let cli = try TestEnvironment.executable()
        func run(_ arguments: String...) async throws -> Subprocess.Result {
            try await Subprocess.run(cli, ["sessions"] + arguments + ["--database-url", fixture.url])
        }

        let added = try await run("add", "--id", "s1", "--org", "acme", "--engine", "wuzapi", "--url", "http://127.0.0.1:1",
                                  "--token-env", "WUZAPI_TOKEN_S1", "--rate-per-second", "2", "--burst", "3")
        #expect(added.status == 0, "\(added.output)")
        let badEngine = try await run("add", "--id", "s2", "--org", "acme", "--engine", "telegram")
        #expect(badEngine.status == 1)
        #expect(badEngine.output.contains("\"validation_error\""), "\(badEngine.output)")

        let shown = try await run("show", "--id", "s1", "--org", "acme")
        #expect(shown.status == 0)
        let record = try JSONSerialization.jsonObject(with: Data(shown.output.utf8)) as? [String: Any]
        #expect(record?["credentialRef"] as? String == "env:WUZAPI_TOKEN_S1")
        #expect(record?["ratePerSecond"] as? Double == 2)
        #expect(record?["burst"] as? Int == 3)
        // Another organization cannot see it.
        let foreign = try await run("show", "--id", "s1", "--org", "other")
        #expect(foreign.status == 1)
        #expect(foreign.output.contains("\"not_found\""), "\(foreign.output)")

        let paused = try await run("set", "--id", "s1", "--org", "acme", "--state", "paused", "--reason", "number being moved")
        #expect(paused.status == 0, "\(paused.output)")
        let listed = try await run("list", "--org", "acme")
        #expect(listed.output.split(separator: "\n").count == 1)
        #expect(listed.output.contains("\"paused\"") && listed.output.contains("number being moved"), "\(listed.output)")

        // A session with queued work is not removed; once the work is canceled, it is.
        _ = try await Outbox.enqueue(EnqueueRequest(org: "acme", session: "s1", kind: .send,
                                                    payload: #"{"type":"text","chat":"4915112345678@s.whatsapp.net","text":"hi"}"#), in: fixture.database)
        let refused = try await run("remove", "--id", "s1", "--org", "acme")
        #expect(refused.status == 1)
        #expect(refused.output.contains("queued or running jobs"), "\(refused.output)")
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.sessions WHERE id = 's1'") == 1)
        let canceled = try await Subprocess.run(cli, ["jobs", "cancel", "--session", "s1", "--reason", "moving", "--database-url", fixture.url])
        #expect(canceled.status == 0, "\(canceled.output)")
        let removed = try await run("remove", "--id", "s1", "--org", "acme")
        #expect(removed.status == 0, "\(removed.output)")
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.sessions WHERE id = 's1'") == 0)
        await fixture.close()
    }
}
