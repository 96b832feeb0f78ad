/// The stable error codes of the gateway API, as they appear in `message.status` events, in
/// `SendResult` errors, in the SQL function's SQLSTATEs, and in HTTP error bodies.
public enum ErrorCode: String, Sendable, Codable, CaseIterable {
    case validationError = "validation_error"
    /// An HTTP request without the right credentials (token or signature).
    case unauthorized
    /// Authenticated, but the credential lacks the capability the route needs.
    case forbidden
    /// An idempotency key already used for a different request (422).
    case idempotencyKeyReused = "idempotency_key_reused"
    /// A request with the same idempotency key is still running (409).
    case idempotencyKeyInUse = "idempotency_key_in_use"
    /// A request body or headers over the API's bounds (413, 431).
    case payloadTooLarge = "payload_too_large"
    case headersTooLarge = "headers_too_large"
    case notFound = "not_found"
    case notImplemented = "not_implemented"
    case rateLimited = "rate_limited"
    case editWindowExpired = "edit_window_expired"
    case revokeWindowExpired = "revoke_window_expired"
    /// The number is not on WhatsApp, or the JID does not exist.
    case invalidRecipient = "invalid_recipient"
    /// WhatsApp answered 463: the account is restricted. Retrying makes it worse.
    case accountRestricted = "account_restricted"
    /// The session stayed disconnected until the job's deadline.
    case sessionUnavailable = "session_unavailable"
    /// No answer in time, on the last attempt.
    case timeout
    /// The engine failed in a way that is not classified further.
    case engineError = "engine_error"
    /// The engine (its version, its WhatsApp backend or its tier) lacks what the job needs: the
    /// message names it. Retrying cannot help; another engine or tier can.
    case engineUnsupported = "engine_unsupported"
    /// After `sent`, the engine reported that the message was not delivered (WAHA's ack -1, ERROR).
    case deliveryFailed = "delivery_failed"
    /// The worker holding the job died, on the last attempt. (As a retry's or deferral's code: it
    /// died or shut down mid-dispatch, so the message may have arrived.)
    case workerLost = "worker_lost"
    case canceled
    /// Internal, for deferrals only: another process holds this message's dispatch lock.
    case dispatchInProgress = "dispatch_in_progress"
    /// An HTTP request failed on the server's side; the message does not say more.
    case internalError = "internal_error"

    /// The SQLSTATE that `wa_outbox.enqueue` raises for this code, if any.
    public static func fromSQLState(_ state: String?) -> ErrorCode? {
        switch state {
        case "WA400": .validationError
        case "WA404": .notFound
        case "WA501": .notImplemented
        case "WA411": .editWindowExpired
        case "WA412": .revokeWindowExpired
        default: nil
        }
    }
}

/// An error with a stable code and a message a person can act on.
public struct OutboxError: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: ErrorCode
    public var message: String

    public init(_ code: ErrorCode, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
}
