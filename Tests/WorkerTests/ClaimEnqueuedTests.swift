import Foundation
import OutboxCore
import OutboxStore
import PostgresClient
import Testing
import TestSupport

/// The API's enqueue-and-claim (`wa_outbox.enqueue_to_claim` and `ClaimQuery.claimEnqueued`, one
/// pipelined transaction): it takes the new job only in its chat's turn, never a replayed one, and
/// a claim whose commit the caller could not see is found by its token.
@Suite("Enqueue and claim in one round trip")
struct ClaimEnqueuedTests {
    static func text(_ chat: Int, _ text: String) -> String {
        #"{"type":"text","chat":"\#(4915100000000 + chat)@s.whatsapp.net","text":"\#(text)"}"#
    }

    /// Runs the pipeline an API process runs for a send; the claimed jobs.
    static func enqueueAndClaim(_ request: EnqueueRequest, worker: UUID, token: UUID, on database: PostgresDatabase) async throws -> (SendResult, [ClaimedJob]) {
        let rows = try await database.withConnection { connection in
            do {
                return try await connection.pipeline([.begin, Outbox.query(request, function: "enqueue_to_claim"),
                                                      ClaimQuery.claimEnqueued(workerID: worker, token: token), .commit])
            } catch {
                try await connection.execute("ROLLBACK")
                throw error
            }
        }
        return (try Outbox.result(from: rows[1]), try ClaimQuery.batch(from: rows[2]).jobs)
    }

    @Test func itClaimsTheNewJobOnlyInItsTurnAndNeverAReplay() async throws {
        let fixture = try await Fixture.make()
        try await fixture.addSessions(["s1"], maxInFlight: 4)
        let (worker, token) = (UUID(), UUID())

        // An idle chat: the job is claimed, under this token, and the claim is found by it.
        let first = EnqueueRequest(org: "org1", session: "s1", kind: .send, payload: Self.text(1, "one"), idempotencyKey: "k1")
        let (sent, claimed) = try await Self.enqueueAndClaim(first, worker: worker, token: token, on: fixture.database)
        #expect(claimed.map(\.id) == [Int64(sent.outboxId)!] && claimed.first?.claim == token)
        #expect(try await fixture.database.withConnection { try await ClaimQuery.lostClaim(token: token, workerID: worker, backend: .none, on: $0) } == [Int64(sent.outboxId)!])
        #expect(try await fixture.database.withConnection { try await ClaimQuery.lostClaim(token: UUID(), workerID: worker, backend: .none, on: $0) }.isEmpty)

        // The same key again: replayed, nothing claimed (the job is running already).
        let (replayed, none) = try await Self.enqueueAndClaim(first, worker: worker, token: UUID(), on: fixture.database)
        #expect(replayed.replayed && replayed.outboxId == sent.outboxId && none.isEmpty)

        // Behind the running job of its chat: queued, not claimed. Another chat: claimed.
        let (_, behind) = try await Self.enqueueAndClaim(EnqueueRequest(org: "org1", session: "s1", kind: .send, payload: Self.text(1, "two")),
                                                         worker: worker, token: UUID(), on: fixture.database)
        #expect(behind.isEmpty)
        let (_, other) = try await Self.enqueueAndClaim(EnqueueRequest(org: "org1", session: "s1", kind: .send, payload: Self.text(2, "three")),
                                                        worker: worker, token: UUID(), on: fixture.database)
        #expect(other.count == 1)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'running'") == 2)
        #expect(try await fixture.count("SELECT in_flight FROM wa_outbox.sessions WHERE id = 's1'") == 2)
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.lanes WHERE busy") == 2)

        // A refused payload: nothing is written, and the connection goes on.
        await #expect(throws: PostgresError.self) {
            _ = try await Self.enqueueAndClaim(EnqueueRequest(org: "org1", session: "s1", kind: .send, payload: #"{"type":"text"}"#),
                                               worker: worker, token: UUID(), on: fixture.database)
        }
        #expect(try await fixture.count("SELECT count(*) FROM wa_outbox.jobs") == 3)
        await fixture.close()
    }
}
