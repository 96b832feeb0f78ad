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
        #expect(try await EventLog.after(0, org: "org1", in: fixture.database).isEmpty)
        try await slow.execute("COMMIT")
        let events = try await EventLog.after(0, org: "org1", in: fixture.database)
        #expect(events.map(\.outboxId) == [first.outboxId, second.outboxId])
        #expect(try await EventLog.after(events[0].id, org: "org1", in: fixture.database).map(\.outboxId) == [second.outboxId])
        #expect(try await EventLog.after(0, org: "org2", in: fixture.database).isEmpty)
        await slow.close()
        await fixture.close()
        await server.destroy()
    }
}
