import Foundation
import OutboxCore
import OutboxStore
import PostgresClient
import Testing
import TestSupport

@Suite("Enqueue transactions and the event stream")
struct StreamTests {
    let text = #"{"type":"text","chat":"4915112345678@s.whatsapp.net","text":"hi"}"#

    @Test func anEnqueueInARolledBackTransactionLeavesNothing() async throws {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["s"])
        struct Abort: Error {}
        await #expect(throws: Abort.self) {
            try await fixture.database.withTransaction { connection in
                _ = try await Outbox.enqueue(EnqueueRequest(org: "org1", session: "s", kind: .send, payload: text), on: connection)
                throw Abort()
            }
        }
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs") == 0)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.events") == 0)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.lanes WHERE pending > 0") == 0)

        let committed = try await fixture.database.withTransaction { connection in
            try await Outbox.enqueue(EnqueueRequest(org: "org1", session: "s", kind: .send, payload: text), on: connection)
        }
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE id = \(committed.outboxId)") == 1)
        await fixture.close()
    }

    @Test func aCursorReaderNeverSkipsAnEventThatCommitsLate() async throws {
        // A server of its own: the reader waits for every older transaction in the cluster, and on the
        // shared server a parallel test's bulk enqueue (one statement, seconds on 2 cores) is one.
        let server = try await PrivateServer.start(.postgres)
        let fixture = try await Fixture.make(url: server.url)
        try await fixture.addSessions(["s"])
        let slow = try await PostgresConnection.connect(PostgresConfiguration(fixture.url), logger: TestEnvironment.logger)
        // The slow transaction takes the lower event id but commits last.
        try await slow.execute("BEGIN")
        let first = try await Outbox.enqueue(EnqueueRequest(org: "org1", session: "s", kind: .send, payload: text), on: slow)
        // Another chat: enqueues into one chat take turns on its lane row, other chats do not wait.
        let other = #"{"type":"text","chat":"4915187654321@s.whatsapp.net","text":"hi"}"#
        let second = try await Outbox.enqueue(EnqueueRequest(org: "org1", session: "s", kind: .send, payload: other), in: fixture.database)
        #expect(Int(first.outboxId)! < Int(second.outboxId)!)
        // While the slow one is open, the reader does not move past it.
        #expect(try await EventLog.after(.start, org: "org1", in: fixture.database).isEmpty)
        try await slow.execute("COMMIT")
        let events = try await EventLog.after(.start, org: "org1", in: fixture.database)
        #expect(events.map(\.outboxId) == [first.outboxId, second.outboxId])
        #expect(try await EventLog.after(events[0].cursor, org: "org1", in: fixture.database).map(\.outboxId) == [second.outboxId])
        #expect(try await EventLog.after(.start, org: "org2", in: fixture.database).isEmpty)
        await slow.close()
        await fixture.close()
        await server.destroy()
    }

    /// Two workers completing batches at once: the transaction that took the lower event id holds a
    /// newer xid than one that wrote a higher id and committed first. Read in id order, the reader
    /// moved past the lower id while it was invisible and never returned it.
    @Test func aCursorReaderNeverSkipsALowerIDWrittenByANewerTransaction() async throws {
        let server = try await PrivateServer.start(.postgres)
        let fixture = try await Fixture.make(url: server.url)
        try await fixture.addSessions(["s"])
        let configuration = PostgresConfiguration(fixture.url)
        let older = try await PostgresConnection.connect(configuration, logger: TestEnvironment.logger)
        let newer = try await PostgresConnection.connect(configuration, logger: TestEnvironment.logger)
        // `older` gets its transaction id first, as a completion does by updating its jobs first.
        try await older.execute("BEGIN")
        _ = try await older.query("SELECT pg_current_xact_id()")
        try await newer.execute("BEGIN")
        let low = try await Outbox.enqueue(EnqueueRequest(org: "org1", session: "s", kind: .send, payload: text), on: newer)
        let other = #"{"type":"text","chat":"4915187654321@s.whatsapp.net","text":"hi"}"#
        let high = try await Outbox.enqueue(EnqueueRequest(org: "org1", session: "s", kind: .send, payload: other), on: older)
        try await older.execute("COMMIT")

        var seen: [StatusEvent] = []
        var cursor = EventCursor.start
        func read() async throws {
            let page = try await EventLog.after(cursor, org: "org1", in: fixture.database)
            seen += page
            cursor = page.last?.cursor ?? cursor
        }
        try await read()
        #expect(seen.map(\.outboxId) == [high.outboxId], "the older transaction's event is settled; the newer one's is not")
        try await newer.execute("COMMIT")
        try await read()
        #expect(seen.map(\.outboxId) == [high.outboxId, low.outboxId], "the lower id arrives once its transaction commits")
        #expect(seen[1].id < seen[0].id)
        // A client that had the first event and resumes by its id gets the second.
        let resumed = try await EventLog.cursor(afterID: seen[0].id, org: "org1", in: fixture.database)
        #expect(try await EventLog.after(resumed, org: "org1", in: fixture.database).map(\.id) == [seen[1].id])
        #expect(try await EventLog.cursor(afterID: seen[0].id, org: "org2", in: fixture.database) != resumed, "another organization's id is not a cursor")
        #expect(try await EventLog.head(in: fixture.database) == seen[1].cursor)
        await older.close()
        await newer.close()
        await fixture.close()
        await server.destroy()
    }
}
