import Foundation
import Engines
import OutboxCore
import OutboxStore
import PostgresClient
import Simulator
import Testing
import TestSupport
import Worker

/// The error code `body` fails with, or nil.
func code(_ body: () async throws -> Void) async -> ErrorCode? {
    do {
        try await body()
        return nil
    } catch {
        return (error as? OutboxError)?.code
    }
}

/// One in-process worker against the in-process simulator, on a real database.
@Suite("Worker behaviour")
struct WorkerTests {
    @Test func transientFailuresAndAmbiguousTimeoutsEndSucceededWithoutDuplicates() async throws {
        let fixture = try await Fixture.make()
        let sessions = (0..<20).map { "t\($0)" }
        try await fixture.addSessions(sessions)
        try await fixture.enqueueTexts(count: 1_000, sessions: sessions, chatsPerSession: 5)
        // 30% + 10% failing attempts: allow enough attempts that none runs out by chance.
        try await fixture.database.query("UPDATE wa_outbox.jobs SET max_attempts = 30")
        var configuration = SimulatorConfiguration()
        configuration.transientFailureRate = 0.3
        configuration.ambiguousTimeoutRate = 0.1
        let simulator = try WhatsAppSimulator(configuration: configuration)
        try await fixture.drain(simulator: simulator)

        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'") == 1_000)
        let attempts = try await fixture.count("SELECT sum(attempts)::int8 FROM wa_outbox.jobs")
        #expect(attempts > 1_300, "expected retries to be recorded, got \(attempts) attempts for 1000 jobs")
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.events WHERE status = 'retrying'") == attempts - 1_000)
        let stats = simulator.stats
        #expect(stats.delivered == 1_000)
        #expect(stats.suppressedDuplicates > 0, "ambiguous timeouts should have caused suppressed resends")
        await fixture.close()
    }

    /// Once an attempt may have reached WhatsApp, every later dispatch of the send looks for the
    /// message first, whatever came between: deferrals rewrite the job's error code, the mark
    /// stays. Only a replay that gives the send a new message id clears it.
    @Test func theMaybeSentMarkOutlivesDeferralsAndOnlyANewMessageIDClearsIt() async throws {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["m"])
        try await fixture.enqueueTexts(count: 1, sessions: ["m"], chatsPerSession: 1)
        let worker = UUID()
        func claim() async throws -> ClaimedJob {
            let batch = try await fixture.database.withConnection { try await ClaimQuery.claim(workerID: worker, limit: 1, on: $0) }
            return try #require(batch.jobs.first)
        }
        func complete(_ job: ClaimedJob, _ outcome: Outcome) async throws {
            let done = try await fixture.database.withConnection {
                try await CompletionQuery.complete([Completion(jobID: job.id, claim: job.claim, workerID: worker, outcome: outcome)], on: $0)
            }
            #expect(done == [job.id])
        }

        var job = try await claim()
        #expect(!job.maybeSent)
        try await complete(job, .retry(after: .zero, code: .engineError, message: "503"))
        job = try await claim()
        #expect(!job.maybeSent, "a refused request never reached WhatsApp")
        try await complete(job, .retry(after: .zero, code: .timeout, message: "no answer in 30 s"))
        job = try await claim()
        #expect(job.maybeSent)
        try await complete(job, .defer_(after: .zero, code: .rateLimited, message: "over the session's rate"))
        job = try await claim()
        #expect(job.maybeSent, "a deferral does not clear it")
        try await complete(job, .failed(code: .engineError, message: "gave up"))

        try await JobQueries.replay([job.id], actor: "ops", reason: "same message", newMessageID: false, in: fixture.database)
        job = try await claim()
        #expect(job.maybeSent, "a replay with the same message id keeps it")
        try await complete(job, .failed(code: .engineError, message: "gave up"))
        try await JobQueries.replay([job.id], actor: "ops", reason: "a new message", newMessageID: true, in: fixture.database)
        job = try await claim()
        #expect(!job.maybeSent, "a new message id is a new message")
        await fixture.close()
    }

    @Test func aRestrictedAccountPausesItsSessionAndAnUnknownNumberFails() async throws {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["restricted", "fine"])
        // No engine refuses an unknown number; the simulator does when asked to, for this path.
        var configuration = SimulatorConfiguration()
        configuration.unknownNumberPrefix = "000"
        let simulator = try WhatsAppSimulator(configuration: configuration)
        simulator.setStatus(.restricted, session: "restricted")
        try await fixture.enqueueTexts(count: 20, sessions: ["restricted"], chatsPerSession: 4)
        try await fixture.enqueueTexts(count: 20, sessions: ["fine"], chatsPerSession: 4)
        let unknown = try await Outbox.enqueue(EnqueueRequest(org: "org1", session: "fine", kind: .send,
                                                              payload: #"{"type":"text","chat":"000123456@s.whatsapp.net","text":"hi"}"#), in: fixture.database)
        try await fixture.drain(simulator: simulator)

        // 463: the session is restricted with WhatsApp's answer, one session event says so, and
        // its jobs wait queued with no attempt spent. The other session is unaffected.
        let session = try #require(try await SessionRegistry.find("restricted", in: fixture.database))
        #expect(session.state == "restricted")
        #expect(session.stateReason?.contains("463") == true)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.events WHERE kind = 'session' AND status = 'restricted' AND session_id = 'restricted'") == 1)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE session_id = 'restricted' AND state = 'queued' AND attempts = 0") == 20)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE session_id = 'fine' AND state = 'succeeded'") == 20)
        let failed = try await fixture.database.query("SELECT state, attempts, error_code FROM wa_outbox.jobs WHERE id = \(Int64(unknown.outboxId)!)")
        #expect(try failed[0].decode(String.self, at: 0) == "failed")
        #expect(try failed[0].decode(Int.self, at: 1) == 1)
        #expect(try failed[0].decode(String?.self, at: 2) == "invalid_recipient")
        #expect(simulator.stats.delivered == 20)

        // The operator clears it once WhatsApp lifts the restriction: the jobs go, once each.
        simulator.setStatus(.connected, session: "restricted")
        var changes = SessionRegistry.Changes()
        changes.state = "active"
        changes.reason = "appeal accepted"
        try await SessionRegistry.update("restricted", org: "org1", changes, in: fixture.database)
        try await fixture.drain(simulator: simulator)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE session_id = 'restricted' AND state = 'succeeded' AND attempts = 1") == 20)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.events WHERE kind = 'session' AND status = 'active'") == 1)
        #expect(simulator.stats.delivered == 40)
        await fixture.close()
    }

    @Test func editsRevokesAndMediaOutsideTheRulesAreRefusedAndNeverDispatched() async throws {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["s"])
        let simulator = try WhatsAppSimulator()
        let chat = "4915112345678@s.whatsapp.net"
        func enqueue(_ kind: JobKind, _ payload: String) async throws(OutboxError) -> SendResult {
            try await Outbox.enqueue(EnqueueRequest(org: "org1", session: "s", kind: kind, payload: payload), in: fixture.database)
        }
        let text = try await enqueue(.send, #"{"type":"text","chat":"\#(chat)","text":"hello"}"#)
        let poll = try await enqueue(.send, #"{"type":"poll","chat":"\#(chat)","name":"Lunch?","options":["Pizza","Sushi"]}"#)
        try await fixture.drain(simulator: simulator)
        #expect(simulator.stats.delivered == 2)

        // Refused at enqueue: nothing is written.
        let jobsBefore = try await fixture.count("SELECT count(*) FROM wa_outbox.jobs")
        try await fixture.database.query("UPDATE wa_outbox.jobs SET sent_at = now() - interval '20 minutes' WHERE wa_message_id = \(text.waMessageId)")
        #expect(await code { _ = try await enqueue(.edit, #"{"chat":"\#(chat)","messageId":"\#(text.waMessageId)","text":"fixed"}"#) } == .editWindowExpired)
        try await fixture.database.query("UPDATE wa_outbox.jobs SET sent_at = now() - interval '49 hours' WHERE wa_message_id = \(text.waMessageId)")
        #expect(await code { _ = try await enqueue(.revoke, #"{"chat":"\#(chat)","messageId":"\#(text.waMessageId)"}"#) } == .revokeWindowExpired)
        #expect(await code { _ = try await enqueue(.edit, #"{"chat":"\#(chat)","messageId":"\#(poll.waMessageId)","text":"fixed"}"#) } == .validationError)
        #expect(await code { _ = try await enqueue(.send, #"{"type":"image","chat":"\#(chat)","url":"https://x/y.png"}"#) } == .notImplemented)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs") == jobsBefore)

        // Allowed at enqueue, but the window closes before dispatch: refused by the worker.
        try await fixture.database.query("UPDATE wa_outbox.jobs SET sent_at = now() WHERE wa_message_id = \(text.waMessageId)")
        let edit = try await enqueue(.edit, #"{"chat":"\#(chat)","messageId":"\#(text.waMessageId)","text":"fixed"}"#)
        let revoke = try await enqueue(.revoke, #"{"chat":"\#(chat)","messageId":"\#(text.waMessageId)"}"#)
        try await fixture.database.query("UPDATE wa_outbox.jobs SET sent_at = now() - interval '49 hours' WHERE wa_message_id = \(text.waMessageId)")
        try await fixture.drain(simulator: simulator)
        let codes = try await fixture.database.query("SELECT id, state, error_code FROM wa_outbox.jobs WHERE kind <> 'send' ORDER BY id")
        #expect(try codes.map { String(try $0.decode(Int64.self, at: 0)) } == [edit.outboxId, revoke.outboxId])
        #expect(try codes.map { try $0.decode(String.self, at: 1) } == ["failed", "failed"])
        #expect(try codes.map { try $0.decode(String?.self, at: 2) } == ["edit_window_expired", "revoke_window_expired"])
        #expect(simulator.stats.edits == 0)
        #expect(simulator.stats.revokes == 0)

        // Inside the windows, both go through.
        try await fixture.database.query("UPDATE wa_outbox.jobs SET sent_at = now() WHERE wa_message_id = \(text.waMessageId)")
        _ = try await enqueue(.edit, #"{"chat":"\#(chat)","messageId":"\#(text.waMessageId)","text":"fixed"}"#)
        _ = try await enqueue(.revoke, #"{"chat":"\#(chat)","messageId":"\#(text.waMessageId)"}"#)
        try await fixture.drain(simulator: simulator)
        #expect(simulator.stats.edits == 1)
        #expect(simulator.stats.revokes == 1)
        await fixture.close()
    }

    @Test func anUndecodableRowFailsAloneAndTheBatchGoesOn() async throws {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["s"], maxInFlight: 20)
        try await fixture.enqueueTexts(count: 10, sessions: ["s"], chatsPerSession: 10)
        // Written straight into the table, as a buggy producer might: text is a number.
        try await fixture.database.query("""
            WITH job AS (
                INSERT INTO wa_outbox.jobs (org, session_id, chat, kind, wa_message_id, payload, deadline)
                VALUES ('org1', 's', '4915199999999@s.whatsapp.net', 'send', '3EB0BAD0BAD0BAD0BAD0BA',
                        '{"type": "text", "chat": "4915199999999@s.whatsapp.net", "text": 42}', now() + interval '1 day')
                RETURNING session_id, chat, org
            )
            INSERT INTO wa_outbox.lanes (session_id, chat, org, pending, ready_at) SELECT session_id, chat, org, 1, now() FROM job
            """)
        let simulator = try WhatsAppSimulator()
        try await fixture.drain(simulator: simulator)
        let bad = try await fixture.database.query("SELECT state, error_code, error_message FROM wa_outbox.jobs WHERE wa_message_id = '3EB0BAD0BAD0BAD0BAD0BA'")
        #expect(try bad[0].decode(String.self, at: 0) == "failed")
        #expect(try bad[0].decode(String?.self, at: 1) == "validation_error")
        #expect(try bad[0].decode(String?.self, at: 2)?.contains("text") == true)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'") == 10)
        #expect(simulator.stats.delivered == 10)
        await fixture.close()
    }

    @Test func fiftyConcurrentEnqueuesWithOneKeyCreateOneJob() async throws {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["s"])
        let database = PostgresDatabase(configuration: PostgresConfiguration(fixture.url), maxConnections: 50, logger: TestEnvironment.logger)
        let results = try await withThrowingTaskGroup(of: SendResult.self) { group in
            for index in 0..<50 {
                group.addTask {
                    try await Outbox.enqueue(EnqueueRequest(org: "org1", session: "s", kind: .send,
                                                            payload: #"{"type":"text","chat":"4915112345678@s.whatsapp.net","text":"try \#(index)"}"#,
                                                            idempotencyKey: "order-42"), in: database)
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(Set(results.map(\.outboxId)).count == 1)
        #expect(Set(results.map(\.waMessageId)).count == 1)
        #expect(results.filter { !$0.replayed }.count == 1)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs") == 1)
        #expect(try await fixture.count("SELECT pending::int8 FROM wa_outbox.lanes") == 1)
        // The same key in another organization is another job.
        try await fixture.addSessions(["other"], org: "org2")
        let other = try await Outbox.enqueue(EnqueueRequest(org: "org2", session: "other", kind: .send,
                                                            payload: #"{"type":"text","chat":"4915112345678@s.whatsapp.net","text":"x"}"#,
                                                            idempotencyKey: "order-42"), in: database)
        #expect(!other.replayed)
        #expect(other.outboxId != results[0].outboxId)
        await database.close()
        await fixture.close()
    }

    /// A hot chat costs the claim nothing: its backlog is one lane, probed at its head. Judged by
    /// the pages one claim reads (`EXPLAIN (ANALYZE, BUFFERS)`, rolled back), not by wall-clock time,
    /// which the suite's parallel tests make swing threefold; the drains' times are printed.
    @Test func aHotChatDoesNotSlowTheOthers() async throws {
        func claimPages(_ fixture: Fixture) async throws -> Int {
            let claim = ClaimQuery.query(workerID: UUID(), limit: 100, runs: RunTests.runs)
            return try await fixture.database.withConnection { connection in
                try await connection.execute("BEGIN")
                let plan = try await connection.query(PostgresQuery("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + claim.sql, binds: claim.binds))
                    .map { try $0.decode(String.self, at: 0) }.joined()
                try await connection.execute("ROLLBACK")
                let root = try #require((try JSONSerialization.jsonObject(with: Data(plan.utf8)) as? [[String: Any]])?.first?["Plan"] as? [String: Any])
                return (root["Shared Hit Blocks"] as? Int ?? 0) + (root["Shared Read Blocks"] as? Int ?? 0)
            }
        }
        // Baseline: 100 chats over 10 sessions, 20 jobs each.
        func otherChats(_ fixture: Fixture) async throws {
            let sessions = (0..<10).map { "c\($0)" }
            try await fixture.addSessions(sessions, maxInFlight: 10)
            try await fixture.enqueueTexts(count: 2_000, sessions: sessions, chatsPerSession: 10)
        }
        func drainOthers(_ fixture: Fixture) async throws -> Duration {
            var configuration = WorkerConfiguration(name: "hot")
            configuration.pollInterval = .milliseconds(50)
            let worker = Worker(configuration: configuration, database: fixture.database, listenerConfiguration: PostgresConfiguration(fixture.url),
                                engines: fixture.engines(simulator: try WhatsAppSimulator()), coordinator: nil,
                                logger: TestEnvironment.logger)
            let start = ContinuousClock.now
            async let running: Void = worker.run()
            while try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE session_id LIKE 'c%' AND state <> 'succeeded'") > 0 {
                try await Task.sleep(for: .milliseconds(10))
            }
            let took = ContinuousClock.now - start
            worker.shutdown()
            try await running
            return took
        }
        let plain = try await Fixture.make()
        try await otherChats(plain)
        let plainPages = try await claimPages(plain)
        let baseline = try await drainOthers(plain)
        await plain.close()

        let hot = try await Fixture.make()
        try await hot.addSessions(["hot"])
        // 50,000 jobs in one chat, written in bulk (the enqueue path is tested elsewhere).
        try await hot.database.query("""
            INSERT INTO wa_outbox.jobs (org, session_id, chat, kind, wa_message_id, payload, deadline)
            SELECT 'org1', 'hot', '4915100000001@s.whatsapp.net', 'send', '3EB0' || lpad(upper(to_hex(g)), 18, '0'),
                   '{"type":"text","chat":"4915100000001@s.whatsapp.net","text":"hot"}', now() + interval '1 day'
            FROM generate_series(1, 50000) g
            """)
        try await hot.database.query("INSERT INTO wa_outbox.lanes (session_id, chat, org, pending, ready_at) VALUES ('hot', '4915100000001@s.whatsapp.net', 'org1', 50000, now())")
        try await hot.database.query("ANALYZE wa_outbox.jobs")
        try await otherChats(hot)
        let hotPages = try await claimPages(hot)
        let withHotChat = try await drainOthers(hot)
        let hotSent = try await hot.count("SELECT count(*) FROM wa_outbox.jobs WHERE session_id = 'hot' AND state = 'succeeded'")
        print("hot chat: a claim read \(plainPages) pages alone and \(hotPages) beside a 50,000-job chat; 2000 jobs of 100 other chats drained in \(baseline) alone and \(withHotChat) beside it (which sent \(hotSent) meanwhile)")
        #expect(hotPages < plainPages + 100, "a claim read \(hotPages) pages beside a hot chat vs \(plainPages) alone")
        #expect(hotSent > 0)
        await hot.close()
    }
}
