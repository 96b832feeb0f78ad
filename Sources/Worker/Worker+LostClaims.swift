import Foundation
import Logging
import NIOConcurrencyHelpers
import OutboxCore
import OutboxStore
import PostgresClient

/// A claim whose connection broke before its answer came: it may have committed (its `COMMIT`
/// went in the same round trip), and only its token names what it took.
struct LostClaim: Error {
    var token: UUID
    /// The server backend that ran it, ended before the search (`ClaimQuery.lostClaim`);
    /// `.none` for a claim known to have committed whose rows could not be read.
    var backend: PostgresBackend
    var underlying: any Error
    var since = ContinuousClock.now
}

extension Worker {
    /// Hands back the jobs of every lost claim that committed after all: not sent, no attempt
    /// spent. False while one cannot be settled yet (PostgreSQL unreachable, or the claim's
    /// backend still running): the claim loop then waits and tries again, claiming nothing
    /// meanwhile. One still unsettled after a lease stops the worker: its jobs then go to the
    /// rescue with the lease (as `worker_lost`, an attempt spent) instead of staying held.
    func recoverLostClaims() async -> Bool {
        for lost in state.withLockedValue({ $0.lostClaims }) {
            do {
                let jobs = try await database.withConnection {
                    try await ClaimQuery.lostClaim(token: lost.token, workerID: id, backend: lost.backend, on: $0)
                }
                for job in jobs {
                    writer.add(Completion(jobID: job, claim: lost.token, workerID: id,
                                          outcome: .defer_(after: .zero, code: .engineError, message: "the claim's answer was lost")), releasing: nil)
                }
                state.withLockedValue { $0.lostClaims.removeAll { $0.token == lost.token } }
                logger.warning("a claim's answer was lost; what it took goes back to the queue",
                               metadata: ["jobs": "\(jobs.count)", "error": "\(lost.underlying)"])
            } catch {
                if ContinuousClock.now - lost.since > configuration.lease {
                    logger.error("a claim whose answer was lost could not be settled within a lease; stopping so the rescue takes its jobs",
                                 metadata: ["error": "\(error)"])
                    shutdown()
                } else {
                    logger.warning("a claim whose answer was lost cannot be settled yet; will retry", metadata: ["error": "\(error)"])
                }
                return false
            }
        }
        return true
    }

    /// At shutdown, one more try for claims still lost: what it finds is written with the rest.
    func settleLostClaimsAtShutdown() async {
        guard state.withLockedValue({ !$0.lostClaims.isEmpty }) else { return }
        if await !recoverLostClaims() {
            logger.error("claims whose answer was lost are left to the rescue, which spends an attempt on each of their jobs",
                         metadata: ["claims": "\(state.withLockedValue { $0.lostClaims.count })"])
        }
    }
}
