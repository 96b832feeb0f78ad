import NIOConcurrencyHelpers
import Engines
import Foundation
import LineOutput
import OutboxCore
import Synchronization

/// How the simulator misbehaves.
public struct SimulatorConfiguration: Sendable {
    /// Added to every operation.
    public var latency: Duration = .zero
    /// Share of operations refused with a transient error before anything is delivered.
    public var transientFailureRate: Double = 0
    /// Share of operations that are delivered but whose answer never comes in time.
    public var ambiguousTimeoutRate: Double = 0
    /// How long an ambiguous answer is held back (HTTP dialect; longer than the client's timeout).
    public var ambiguousDelay: Duration = .seconds(3)
    /// Per-session operations per second before WhatsApp answers rate-overlimit (429); nil: none.
    public var rateLimitPerSecond: Int?
    /// Numbers starting with this are "not on WhatsApp". Off by default: neither WAHA nor wuzapi
    /// checks that a recipient exists before sending.
    public var unknownNumberPrefix: String?
    /// Edit and revoke windows, as WhatsApp's official apps allow.
    public var editWindow: Duration = MessageWindows.edit
    public var revokeWindow: Duration = MessageWindows.revoke
    /// How long a send to a session that is not connected hangs before it is refused (WAHA: ~5 s).
    public var notConnectedDelay: Duration = .zero
    /// Receipts: the recipient's phone acknowledges a sent message after `deliveredAfter`, and
    /// shows it after `readAfter` (nil: never read).
    public var deliveredAfter: Duration = .milliseconds(50)
    public var readAfter: Duration? = .milliseconds(150)

    public init() {}
}

/// A failure as the simulated WhatsApp reports it; each dialect renders it its own way.
public enum SimulatorError: Error, Sendable, Equatable {
    case notConnected
    case restricted
    case rateOverlimit
    case notOnWhatsApp(String)
    case messageNotFound(String)
    case notEditable(String)
    case editWindowPassed(String)
    case revokeWindowPassed(String)
    case transient
    /// The engine refuses the session's credentials (a wrong token or API key).
    case unauthorized
    /// Delivered, but the answer is lost.
    case ambiguousTimeout
}

/// One accepted message, as written to the delivery log.
public struct Delivery: Sendable, Codable, Equatable {
    public var session: String
    public var chat: String
    public var id: String
    public var kind: String
    public var type: String?
    public var time: Double
}

/// A WhatsApp stand-in that keeps the rules the real service keeps.
///
/// - Message ids are the client's: a send whose id was already accepted is suppressed and counted,
///   never delivered twice (what receiving clients do with a repeated id).
/// - Only own text messages can be edited, within 15 minutes; revokes within 48 hours.
/// - Sessions can be disconnected or restricted (463); a session over `rateLimitPerSecond` gets
///   rate-overlimit (429).
/// - Transient errors happen before delivery; ambiguous timeouts after it.
/// Every accepted operation is appended to the delivery log (JSON lines) when one is given; the
/// log is written from a thread of its own (`LineWriter`), so an operation never waits for the disk.
public final class WhatsAppSimulator: Sendable {
    public let configuration: SimulatorConfiguration

    private struct SentMessage {
        var session: String
        var chat: String
        var content: MessageContent
        var sentAt: Date
        var revoked = false
        var type: String { content.typeName }
    }

    /// One of a session's own messages in a chat, as an engine lists them.
    public struct ListedMessage: Sendable {
        public var id: String
        public var content: MessageContent
        public var sentAt: Date
    }

    /// A receipt the recipient's phone sends back for a delivered message.
    public struct Receipt: Sendable {
        public enum Kind: String, Sendable { case delivered, read }
        public var session: String
        public var chat: String
        public var messageID: String
        public var kind: Kind
    }

    private struct State {
        var sessionStates: [String: EngineSessionStatus] = [:]
        var unauthorized: Set<String> = []
        var messages: [String: SentMessage] = [:]
        /// Message ids per (session, chat), oldest first.
        var chats: [String: [String]] = [:]
        /// What was delivered per (session, chat, content), as 64-bit hashes: the same content
        /// twice is a duplicate delivery, whatever its id (engines without caller-chosen ids).
        var contents: Set<Int> = []
        var deliveredTwice = 0
        var receiptHandler: (@Sendable (Receipt) -> Void)?
        var delivered = 0
        var suppressedDuplicates = 0
        var edits = 0
        var revokes = 0
        var rateWindow: [String: (second: Int64, count: Int)] = [:]
    }

    private let state: NIOLockedValueBox<State>
    private let deliveryLog: LineWriter?

    public init(configuration: SimulatorConfiguration = SimulatorConfiguration(), deliveryLog: URL? = nil) throws {
        self.configuration = configuration
        self.state = NIOLockedValueBox(State())
        if let deliveryLog {
            let descriptor = open(deliveryLog.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard descriptor >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
            self.deliveryLog = LineWriter(fileDescriptor: descriptor, capacity: .unbounded, closesDescriptor: true, name: "sim-delivery-log")
        } else {
            self.deliveryLog = nil
        }
    }

    deinit {
        deliveryLog?.stop()
    }

    public struct Stats: Sendable, Codable, Equatable {
        public var delivered: Int
        public var suppressedDuplicates: Int
        public var edits: Int
        public var revokes: Int
        /// Deliveries of content already delivered to that chat by that session.
        public var deliveredTwice: Int
    }

    public var stats: Stats {
        state.withLockedValue {
            Stats(delivered: $0.delivered, suppressedDuplicates: $0.suppressedDuplicates, edits: $0.edits, revokes: $0.revokes,
                  deliveredTwice: $0.deliveredTwice)
        }
    }

    /// Called for every receipt (delivered, then read) of a sent message; the HTTP dialects turn
    /// them into their engine's webhooks.
    public func onReceipt(_ handler: @escaping @Sendable (Receipt) -> Void) {
        state.withLockedValue { $0.receiptHandler = handler }
    }

    /// A session's own latest messages in a chat, newest first (what an engine's chat history shows).
    public func messages(session: String, chat: String, limit: Int) -> [ListedMessage] {
        state.withLockedValue { state in
            (state.chats["\(session)\u{0}\(chat)"] ?? []).suffix(limit).reversed().compactMap { id in
                state.messages[id].map { ListedMessage(id: id, content: $0.content, sentAt: $0.sentAt) }
            }
        }
    }

    public func setStatus(_ status: EngineSessionStatus, session: String) {
        state.withLockedValue { $0.sessionStates[session] = status }
    }

    /// Whether the engine accepts the session's credentials (false: every call is refused, 401).
    public func setCredentialsValid(_ valid: Bool, session: String) {
        state.withLockedValue { state in
            if valid { state.unauthorized.remove(session) } else { state.unauthorized.insert(session) }
        }
    }

    public func status(session: String) -> EngineSessionStatus {
        state.withLockedValue { $0.sessionStates[session] ?? .connected }
    }

    /// Returns once every delivery so far is in the delivery log.
    public func flush() async {
        await deliveryLog?.flush()
    }

    /// Performs an operation: the shared core of every dialect.
    public func perform(_ operation: WhatsAppOperation, session: String, now: Date = Date()) async throws(SimulatorError) -> EngineReceipt {
        if configuration.latency > .zero { try? await Task.sleep(for: configuration.latency) }
        let roll = Double.random(in: 0..<1)
        if roll < configuration.transientFailureRate { throw .transient }
        let ambiguous = roll < configuration.transientFailureRate + configuration.ambiguousTimeoutRate
        if status(session: session) != .connected, status(session: session) != .restricted, configuration.notConnectedDelay > .zero {
            try? await Task.sleep(for: configuration.notConnectedDelay)
        }
        let result = state.withLockedValue { state -> Result<(EngineReceipt, fresh: Bool), SimulatorError> in
            if state.unauthorized.contains(session) { return .failure(.unauthorized) }
            switch state.sessionStates[session] ?? .connected {
            case .restricted: return .failure(.restricted)
            case .disconnected, .connecting: return .failure(.notConnected)
            case .connected: break
            }
            if let limit = configuration.rateLimitPerSecond {
                let second = Int64(now.timeIntervalSince1970)
                var window = state.rateWindow[session] ?? (second, 0)
                if window.second != second { window = (second, 0) }
                guard window.count < limit else { return .failure(.rateOverlimit) }
                window.count += 1
                state.rateWindow[session] = window
            }
            let before = state.delivered
            return Result { () throws(SimulatorError) in
                (try apply(operation, session: session, now: now, state: &state), fresh: state.delivered > before)
            }
        }
        let (receipt, fresh) = try result.get()
        if fresh { scheduleReceipts(session: session, chat: operation.chat, id: receipt.messageID) }
        if ambiguous { throw .ambiguousTimeout }
        return receipt
    }

    private func apply(_ operation: WhatsAppOperation, session: String, now: Date, state: inout State) throws(SimulatorError) -> EngineReceipt {
        switch operation {
        case .send(let id, let chat, let content):
            if let prefix = configuration.unknownNumberPrefix, chat.hasSuffix("@s.whatsapp.net") {
                let number = chat.split(separator: "@").first.map(String.init) ?? ""
                if number.hasPrefix(prefix) { throw .notOnWhatsApp(number) }
            }
            if let existing = state.messages[id] {
                state.suppressedDuplicates += 1
                return EngineReceipt(messageID: id, timestamp: existing.sentAt)
            }
            state.messages[id] = SentMessage(session: session, chat: chat, content: content, sentAt: now)
            state.chats["\(session)\u{0}\(chat)", default: []].append(id)
            var hasher = Hasher()
            hasher.combine(session)
            hasher.combine(chat)
            hasher.combine(content)
            if !state.contents.insert(hasher.finalize()).inserted { state.deliveredTwice += 1 }
            state.delivered += 1
            record(Delivery(session: session, chat: chat, id: id, kind: "send", type: content.typeName, time: now.timeIntervalSince1970))
        case .edit(let id, let chat, _):
            guard let message = state.messages[id], message.session == session, message.chat == chat, !message.revoked else {
                throw .messageNotFound(id)
            }
            guard message.type == "text" else { throw .notEditable("only text messages can be edited; \(id) is a \(message.type)") }
            guard now.timeIntervalSince(message.sentAt) <= configuration.editWindow.seconds else { throw .editWindowPassed(id) }
            state.edits += 1
            record(Delivery(session: session, chat: chat, id: id, kind: "edit", type: nil, time: now.timeIntervalSince1970))
        case .revoke(let id, let chat, let sender):
            if sender == nil {
                guard let message = state.messages[id], message.session == session, message.chat == chat else {
                    throw .messageNotFound(id)
                }
                guard now.timeIntervalSince(message.sentAt) <= configuration.revokeWindow.seconds else { throw .revokeWindowPassed(id) }
                state.messages[id]?.revoked = true
            }
            state.revokes += 1
            record(Delivery(session: session, chat: chat, id: id, kind: "revoke", type: nil, time: now.timeIntervalSince1970))
        }
        return EngineReceipt(messageID: operation.messageID, timestamp: now)
    }

    private func scheduleReceipts(session: String, chat: String, id: String) {
        guard let handler = state.withLockedValue({ $0.receiptHandler }) else { return }
        let configuration = configuration
        Task {
            try? await Task.sleep(for: configuration.deliveredAfter)
            handler(Receipt(session: session, chat: chat, messageID: id, kind: .delivered))
            guard let readAfter = configuration.readAfter else { return }
            try? await Task.sleep(for: readAfter)
            handler(Receipt(session: session, chat: chat, messageID: id, kind: .read))
        }
    }

    /// Queues a delivery-log line; called under the state lock, so lines are in delivery order.
    private func record(_ delivery: Delivery) {
        guard let deliveryLog, var line = try? JSONEncoder().encode(delivery) else { return }
        line.append(UInt8(ascii: "\n"))
        line.withUnsafeBytes { deliveryLog.write(bytes: $0.bindMemory(to: UInt8.self)) }
    }
}

/// The simulator as an in-process engine (`sim`): the same rules, no network.
public struct SimulatorEngine: SessionEngine {
    public let simulator: WhatsAppSimulator

    public init(simulator: WhatsAppSimulator) {
        self.simulator = simulator
    }

    public func perform(_ operation: WhatsAppOperation, session: String) async throws(DispatchFailure) -> EngineReceipt {
        do {
            return try await simulator.perform(operation, session: session)
        } catch {
            throw error.dispatchFailure
        }
    }

    public func status(session: String) async throws(DispatchFailure) -> EngineSessionStatus {
        simulator.status(session: session)
    }
}

extension SimulatorError {
    /// How a real engine's failure of this kind is classified.
    public var dispatchFailure: DispatchFailure {
        switch self {
        case .notConnected: .sessionNotConnected("session is not connected")
        case .restricted: .permanent(.accountRestricted, "WhatsApp restricted this account (463)")
        case .rateOverlimit: .rateLimited(retryAfter: .seconds(1))
        case .notOnWhatsApp(let number): .permanent(.invalidRecipient, "\(number) is not on WhatsApp")
        case .messageNotFound(let id): .permanent(.notFound, "message \(id) not found")
        case .notEditable(let reason): .permanent(.validationError, reason)
        case .editWindowPassed(let id): .permanent(.editWindowExpired, "message \(id) is older than the edit window")
        case .revokeWindowPassed(let id): .permanent(.revokeWindowExpired, "message \(id) is older than the revoke window")
        case .transient: .transient("simulated transient failure")
        case .unauthorized: .permanent(.engineError, "the engine refused the session's credentials")
        case .ambiguousTimeout: .timeout("simulated timeout after delivery")
        }
    }
}
