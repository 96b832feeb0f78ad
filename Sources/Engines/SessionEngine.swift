import Foundation
import OutboxCore

/// What an engine answered for a successful operation.
public struct EngineReceipt: Sendable, Equatable {
    /// The message id WhatsApp knows the message by (for wuzapi and the simulator, the one we chose).
    public var messageID: String
    public var timestamp: Date

    public init(messageID: String, timestamp: Date) {
        self.messageID = messageID
        self.timestamp = timestamp
    }
}

/// A session's connection state, as its engine reports it.
public enum EngineSessionStatus: String, Sendable, Codable {
    case connected, connecting, disconnected, restricted
}

/// The seam between the worker and whatever talks to WhatsApp: one call per operation.
///
/// Conformances classify their failures as `DispatchFailure`, so the worker's retry policy is the
/// same for every engine: not connected and rate limits defer, timeouts are ambiguous and retry
/// with the same message id, restricted accounts and invalid recipients fail at once.
public protocol SessionEngine: Sendable {
    func perform(_ operation: WhatsAppOperation, session: String) async throws(DispatchFailure) -> EngineReceipt
    func status(session: String) async throws(DispatchFailure) -> EngineSessionStatus
    /// Before re-sending `operation` after an ambiguous timeout: the session's own recent messages
    /// in that chat that match it, newest first (the caller skips those another job already owns).
    /// Engines that take our message id return none: a re-send with the same id is dropped by
    /// WhatsApp clients. Engines that choose their own ids must look.
    func reconcile(_ operation: WhatsAppOperation, session: String, since: Date) async throws(DispatchFailure) -> [EngineReceipt]
    /// Whether the engine picks the id of a sent message itself (WAHA), so that a second send of
    /// one message is a second message and only `reconcile` can prevent it.
    var choosesMessageIDs: Bool { get }
    /// The engine server this adapter calls (`scheme://host:port`), or nil for an engine inside the
    /// process. A worker dispatches to one server at most `EngineHosts.connectionsPerHost` at once.
    var host: String? { get }
    /// What the engine says about itself and the session, and which operations will work there.
    func check(session: String) async -> EngineCheck
}

extension SessionEngine {
    public var host: String? { nil }

    public var choosesMessageIDs: Bool { false }

    public func reconcile(_ operation: WhatsAppOperation, session: String, since: Date) async throws(DispatchFailure) -> [EngineReceipt] {
        []
    }
}
