import Engines
import Foundation
import OutboxCore
import OutboxStore
import PostgresClient
import Simulator
import Synchronization

/// Finds the engine for a session from the session registry, and caches it briefly.
///
/// Credentials are resolved here from the session's reference (`env:VAR` or `file:/path`), so the
/// database never holds a secret. A session without a reference uses its own id as its token,
/// which is what the simulator expects.
public final class EngineDirectory: Sendable {
    private let database: PostgresDatabase
    private let simulator: WhatsAppSimulator
    private let requestTimeout: Duration
    private let cache = Mutex<[String: (engine: any SessionEngine, loaded: ContinuousClock.Instant)]>([:])
    private static let ttl: Duration = .seconds(30)

    public init(database: PostgresDatabase, simulator: WhatsAppSimulator, requestTimeout: Duration = .seconds(30)) {
        self.database = database
        self.simulator = simulator
        self.requestTimeout = requestTimeout
    }

    public func engine(for session: String) async throws(DispatchFailure) -> any SessionEngine {
        let now = ContinuousClock.now
        if let cached = cache.withLock({ $0[session] }), now - cached.loaded < Self.ttl { return cached.engine }
        let record: SessionRecord
        do {
            let rows = try await database.query("""
                SELECT id, org, engine, engine_url, credential_ref, state, max_in_flight FROM wa_outbox.sessions WHERE id = \(session)
                """)
            guard let row = rows.first else { throw DispatchFailure.permanent(.notFound, "session \(session) is not registered") }
            record = SessionRecord(id: try row.decode(at: 0), org: try row.decode(at: 1), engine: try row.decode(at: 2),
                                   engineURL: try row.decode(at: 3), credentialRef: try row.decode(at: 4),
                                   state: try row.decode(at: 5), maxInFlight: try row.decode(at: 6))
        } catch let failure as DispatchFailure {
            throw failure
        } catch {
            throw .transient("cannot read session \(session): \(error)")
        }
        let engine = try makeEngine(record)
        cache.withLock { $0[session] = (engine, now) }
        return engine
    }

    private func makeEngine(_ record: SessionRecord) throws(DispatchFailure) -> any SessionEngine {
        switch record.engine {
        case "sim":
            return SimulatorEngine(simulator: simulator)
        case "wuzapi":
            guard let url = record.engineURL else {
                throw .permanent(.engineError, "session \(record.id) uses wuzapi but has no engine URL")
            }
            return WuzapiEngine(baseURL: url, token: try credential(record), requestTimeout: requestTimeout)
        default:
            throw .permanent(.engineError, "engine \(record.engine) of session \(record.id) is not supported by this worker version")
        }
    }

    private func credential(_ record: SessionRecord) throws(DispatchFailure) -> String {
        guard let reference = record.credentialRef else { return record.id }
        if reference.hasPrefix("env:") {
            let name = String(reference.dropFirst(4))
            guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else {
                throw .permanent(.engineError, "credential of session \(record.id) is in $\(name), which is not set for this worker")
            }
            return value
        }
        if reference.hasPrefix("file:") {
            let path = String(reference.dropFirst(5))
            guard let value = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw .permanent(.engineError, "credential file \(path) of session \(record.id) cannot be read")
            }
            return value.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        throw .permanent(.engineError, "credential reference of session \(record.id) must be env:VAR or file:/path")
    }
}
