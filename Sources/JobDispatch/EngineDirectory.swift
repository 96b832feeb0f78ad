import NIOConcurrencyHelpers
import Coordination
import Engines
import OutboxCore
import OutboxStore
import PostgresClient

/// A session's engine and its effective limits.
public struct SessionContext: Sendable {
    public var engine: any SessionEngine
    public var limits: SessionLimits
    /// `sim`, `wuzapi` or `waha`: a metrics label.
    public var engineName: String
}

/// Builds a session's engine adapter from its registry record and resolved credential.
public typealias EngineFactory = @Sendable (_ record: SessionRecord, _ credential: String) throws(DispatchFailure) -> any SessionEngine

/// Finds the engine and limits for a session from the settings a claim returned, or else from the
/// session registry, and caches them briefly.
///
/// The executable registers the engines it offers (`httpEngines` for WAHA and wuzapi, and the
/// simulator where it runs one), so dispatch code depends on no particular engine. Credentials are
/// resolved by `Credentials` from the session's reference, so the database never holds a secret.
public final class EngineDirectory: Sendable {
    private let database: PostgresDatabase
    private let factories: [String: EngineFactory]
    /// The limits of a session that sets none of its own.
    public let defaultLimits: SessionLimits
    private let cache = NIOLockedValueBox<[String: (context: SessionContext, settings: SessionRecord, loaded: ContinuousClock.Instant)]>([:])
    private static let ttl: Duration = .seconds(30)

    public init(database: PostgresDatabase, engines: [String: EngineFactory], defaultLimits: SessionLimits = SessionLimits()) {
        self.database = database
        self.factories = engines
        self.defaultLimits = defaultLimits
    }

    /// The adapters for the engines reached over HTTP: `wuzapi` and `waha`.
    public static func httpEngines(requestTimeout: Duration) -> [String: EngineFactory] {
        [
            "wuzapi": { record, credential throws(DispatchFailure) in
                WuzapiEngine(baseURL: try url(of: record), token: credential, requestTimeout: requestTimeout)
            },
            "waha": { record, credential throws(DispatchFailure) in
                WahaEngine(baseURL: try url(of: record), apiKey: credential, requestTimeout: requestTimeout)
            },
        ]
    }

    private static func url(of record: SessionRecord) throws(DispatchFailure) -> String {
        guard let url = record.engineURL else {
            throw .permanent(.engineError, "session \(record.id) uses \(record.engine) but has no engine URL")
        }
        return url
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
        guard let factory = factories[record.engine] else {
            throw .permanent(.engineError, "engine \(record.engine) of session \(record.id) is not offered by this process")
        }
        let engine = try factory(record, try await Credentials.resolve(record))
        let context = SessionContext(engine: engine, limits: record.limits(over: defaultLimits), engineName: record.engine)
        cache.withLockedValue { $0[session] = (context, Self.settings(of: record), now) }
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
}
