import Engines
import JobDispatch
import Logging
import OutboxStore
import PostgresClient

/// Asks the engines of sessions due for a check whether they are connected (shared by all
/// workers; see `SessionHealth`), a few at a time.
struct SessionHealthPoller: MaintenanceService {
    let name = "session health check"
    let every: Duration
    let engines: EngineDirectory
    let database: PostgresDatabase
    let logger: Logger
    /// Engine status checks in flight at once, per worker.
    static let checksAtOnce = 16

    var interval: Duration { min(every / 2, .seconds(5)) }

    func runOnce() async throws {
        let due = try await database.withConnection { try await SessionHealth.due(every: every, on: $0) }
        // A thousand sessions due at once must not become a thousand concurrent requests.
        let statuses = await withTaskGroup(of: (String, SessionHealth.Status)?.self) { group in
            var next = due.makeIterator()
            func checkNext() {
                guard let session = next.next() else { return }
                group.addTask { await status(of: session).map { (session, $0) } }
            }
            for _ in 0..<Self.checksAtOnce { checkNext() }
            var statuses: [(String, SessionHealth.Status)] = []
            while let result = await group.next() {
                if let result { statuses.append(result) }
                checkNext()
            }
            return statuses
        }
        try await database.withConnection { try await SessionHealth.record(statuses.map { (session: $0.0, status: $0.1) }, on: $0) }
        for (session, status) in statuses where status != .connected {
            logger.info("session not connected; its jobs wait", metadata: ["session.id": "\(session)", "engine.status": "\(status.rawValue)"])
        }
    }

    /// What the session's engine says, or nil when it cannot be asked (the status stays as it
    /// was: a slow answer is not a disconnected session, and a dispatch to an engine that is down
    /// fails and is retried anyway).
    private func status(of session: String) async -> SessionHealth.Status? {
        do {
            switch try await engines.context(for: session).engine.status(session: session) {
            // A restricted account is connected; its first send gets the 463 that restricts the session.
            case .connected, .restricted: return .connected
            case .connecting: return .connecting
            case .disconnected: return .disconnected
            }
        } catch {
            logger.debug("session status unknown", metadata: ["session.id": "\(session)", "error": "\(error)"])
            return nil
        }
    }
}
