import NIOConcurrencyHelpers
import Coordination
import Engines
import Foundation
import OutboxCore
import OutboxStore
import PostgresClient
import Simulator
import Synchronization

/// A session's engine and its effective limits.
public struct SessionContext: Sendable {
    public var engine: any SessionEngine
    public var limits: SessionLimits
    /// `sim`, `wuzapi` or `waha`: a metrics label.
    public var engineName: String
}

/// Finds the engine and limits for a session from the settings a claim returned, or else from the
/// session registry, and caches them briefly.
///
/// Credentials are resolved here from the session's reference (`env:VAR` or `file:/path`), so the
/// database never holds a secret. A session without a reference uses its own id as its token,
/// which is what the simulator expects.
public final class EngineDirectory: Sendable {
    private let database: PostgresDatabase
    private let simulator: WhatsAppSimulator
    private let requestTimeout: Duration
    private let defaultLimits: SessionLimits
    private let cache = NIOLockedValueBox<[String: (context: SessionContext, settings: SessionRecord, loaded: ContinuousClock.Instant)]>([:])
    private static let ttl: Duration = .seconds(30)

    public init(database: PostgresDatabase, simulator: WhatsAppSimulator, requestTimeout: Duration = .seconds(30),
                defaultLimits: SessionLimits = SessionLimits()) {
        self.database = database
        self.simulator = simulator
        self.requestTimeout = requestTimeout
        self.defaultLimits = defaultLimits
    }

    /// The session's engine and limits. `settings`, when the caller has just read them (the claim
    /// returns them with each batch), are used instead of a read of the registry, and settings that
    /// changed take effect at once; without them the cached context lives for `ttl`.
    public func context(for session: String, settings: SessionRecord? = nil) async throws(DispatchFailure) -> SessionContext {
        let now = ContinuousClock.now
        if let cached = cache.withLockedValue({ $0[session] }), now - cached.loaded < Self.ttl,
           settings == nil || settings == cached.settings {
            return cached.context
        }
        let record: SessionRecord
        if let settings {
            record = settings
        } else {
            let found: SessionRecord?
            do {
                found = try await SessionRegistry.find(session, in: database)
            } catch {
                throw .transient("cannot read session \(session): \(error)")
            }
            guard let found else { throw .permanent(.notFound, "session \(session) is not registered") }
            record = found
        }
        var limits = defaultLimits
        limits.ratePerSecond = record.ratePerSecond ?? limits.ratePerSecond
        limits.burst = record.burst ?? limits.burst
        limits.pacing = record.pacing ?? limits.pacing
        limits.minGapMilliseconds = record.minGapMilliseconds ?? limits.minGapMilliseconds
        limits.maxGapMilliseconds = record.maxGapMilliseconds ?? limits.maxGapMilliseconds
        limits.hourlyBudget = record.hourlyBudget ?? limits.hourlyBudget
        limits.dailyBudget = record.dailyBudget ?? limits.dailyBudget
        let context = SessionContext(engine: try makeEngine(record), limits: limits, engineName: record.engine)
        let key = Self.settings(of: record)
        cache.withLockedValue { $0[session] = (context, key, now) }
        return context
    }

    /// The record without what changes while it is used (status, reason, jobs in flight), so it
    /// compares equal to the settings a claim returns.
    private static func settings(of record: SessionRecord) -> SessionRecord {
        var settings = record
        settings.engineStatus = nil
        settings.stateReason = nil
        settings.inFlight = nil
        return settings
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
        case "waha":
            guard let url = record.engineURL else {
                throw .permanent(.engineError, "session \(record.id) uses waha but has no engine URL")
            }
            return WahaEngine(baseURL: url, apiKey: try credential(record), requestTimeout: requestTimeout)
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
