import Foundation

public enum JobKind: String, Sendable, Codable, CaseIterable {
    case send, edit, revoke

    /// What the dispatch lock of a job of this kind on `messageID` is named. A send's lock keeps
    /// its message from being sent twice and outlives the send; an edit or a revoke of that
    /// message is another operation, with a lock of its own, so it never waits for the send's.
    public func lockID(messageID: String) -> String {
        self == .send ? messageID : "\(rawValue):\(messageID)"
    }
}

/// A job's lifecycle. `succeeded`, `failed` and `canceled` are final; `failed` is the dead letter.
public enum JobState: String, Sendable, Codable, CaseIterable {
    case queued, running, succeeded, failed, canceled

    public var isFinal: Bool { self == .succeeded || self == .failed || self == .canceled }
}

/// The `status` of a `message.status` event.
public enum EventStatus: String, Sendable, Codable, CaseIterable {
    case queued
    /// Final for a send: WhatsApp accepted it.
    case sent
    /// Final for an edit.
    case edited
    /// Final for a revoke.
    case revoked
    /// An attempt failed and the job will be retried; not final.
    case retrying
    /// Final: the job failed for good (the dead letter).
    case failed
    /// Final: an operator canceled the job.
    case canceled
    /// After `sent`, from the engine's receipts: the recipient's phone has the message, and has
    /// shown it. Never backwards: no `delivered` after `read`.
    case delivered
    case read
    /// Final, after `sent`: the engine reported the message as not delivered (WAHA's ack -1),
    /// with `delivery_failed`. The earlier `sent` stays.
    case undelivered

    public static func success(for kind: JobKind) -> EventStatus {
        switch kind {
        case .send: .sent
        case .edit: .edited
        case .revoke: .revoked
        }
    }
}

/// A job as a worker holds it after claiming it.
public struct ClaimedJob: Sendable {
    public var id: Int64
    public var org: String
    public var sessionID: String
    public var chat: String
    public var kind: JobKind
    public var waMessageID: String
    /// The payload as stored; decoded at dispatch, so a bad row fails alone.
    public var payload: String
    /// This attempt's number, starting at 1 (a deferral gives it back).
    public var attempt: Int
    /// The token of the claim that took it, which no other claim shares: with the worker id, the
    /// fencing token of its completion.
    public var claim: UUID
    public var maxAttempts: Int
    public var deadline: Date
    /// An earlier attempt may have reached WhatsApp (it timed out, or its worker died or shut
    /// down mid-dispatch): a send first looks for the message at an engine that chooses its own ids.
    public var maybeSent: Bool
    /// How long ago, by the database's clock at the claim, the last such attempt was given up
    /// (nil: never, or before the database kept it).
    public var maybeSentAgo: Duration?
    public var createdAt: Date
    /// The trace the request that enqueued the job belongs to, which its dispatch continues.
    public var trace: JobTraceContext?

    public init(id: Int64, org: String, sessionID: String, chat: String, kind: JobKind, waMessageID: String,
                payload: String, attempt: Int, maxAttempts: Int, deadline: Date, maybeSent: Bool = false,
                createdAt: Date = Date(), trace: JobTraceContext? = nil, maybeSentAgo: Duration? = nil, claim: UUID = UUID()) {
        self.id = id
        self.org = org
        self.sessionID = sessionID
        self.chat = chat
        self.kind = kind
        self.waMessageID = waMessageID
        self.payload = payload
        self.attempt = attempt
        self.maxAttempts = maxAttempts
        self.deadline = deadline
        self.maybeSent = maybeSent
        self.maybeSentAgo = maybeSentAgo
        self.claim = claim
        self.createdAt = createdAt
        self.trace = trace
    }
}

/// The seed API's SendResult, as the enqueue call and `message.status` events carry it.
public struct SendResult: Sendable, Codable, Equatable {
    public var outboxId: String
    public var waMessageId: String
    public var status: String
    public var mode: String
    public var replayed: Bool
    /// Unix seconds.
    public var timestamp: Int64

    public init(outboxId: String, waMessageId: String, status: String, mode: String = "async", replayed: Bool, timestamp: Int64) {
        self.outboxId = outboxId
        self.waMessageId = waMessageId
        self.status = status
        self.mode = mode
        self.replayed = replayed
        self.timestamp = timestamp
    }
}
