import Foundation

/// Why an attempt did not succeed, as the engine seam reports it.
public enum DispatchFailure: Error, Sendable, Equatable {
    /// The session is not connected (starting, scanning a QR code, offline): wait, spend no attempt.
    case sessionNotConnected(String)
    /// Over a rate limit: wait `retryAfter`, spend no attempt.
    case rateLimited(retryAfter: Duration?)
    /// No answer in time. The request may have arrived: retry with the same message id.
    case timeout(String)
    /// A failure worth retrying: 5xx, connection refused or reset.
    case transient(String)
    /// Will fail the same way every time.
    case permanent(ErrorCode, String)
}

/// What the worker does with a job after an attempt.
public enum Outcome: Sendable, Equatable {
    case succeeded
    /// Try again after `delay`; the attempt counts.
    case retry(after: Duration, code: ErrorCode, message: String)
    /// Try again after `delay`; the attempt does not count (deferrals).
    case defer_(after: Duration, code: ErrorCode, message: String)
    /// Final failure: the dead letter.
    case failed(code: ErrorCode, message: String)
}

/// Exponential backoff with jitter, and the classification of failures.
///
/// - Permanent failures fail at once, but for a restricted account (463), which pauses the session.
/// - Transient failures and timeouts retry after `base * 2^(attempt-1)`, capped at `cap`, with
///   "equal jitter" (a random point in the upper half), until the attempt limit.
/// - Deferrals wait without spending an attempt, until the job's deadline.
public struct RetryPolicy: Sendable {
    public var base: Duration
    public var cap: Duration
    /// How long to wait for a disconnected session before looking again.
    public var sessionRecheck: Duration

    public init(base: Duration = .seconds(2), cap: Duration = .seconds(300), sessionRecheck: Duration = .seconds(5)) {
        self.base = base
        self.cap = cap
        self.sessionRecheck = sessionRecheck
    }

    /// The delay before attempt `attempt + 1`, given that attempt `attempt` (1-based) failed.
    public func backoff(afterAttempt attempt: Int, random: Double = .random(in: 0..<1)) -> Duration {
        let exponent = min(max(attempt - 1, 0), 30)
        let full = min(base * (1 << exponent), cap)
        return full / 2 + full / 2 * random
    }

    public func outcome(of failure: DispatchFailure, attempt: Int, maxAttempts: Int, deadline: Date, now: Date = Date()) -> Outcome {
        switch failure {
        case .permanent(.accountRestricted, let message):
            // WhatsApp restricted the account (463): more sends make it worse. The job keeps its
            // place and its attempt; the completion restricts the session until an operator clears it.
            return .defer_(after: .zero, code: .accountRestricted, message: message)
        case .permanent(let code, let message):
            return .failed(code: code, message: message)
        case .timeout(let message), .transient(let message):
            let code: ErrorCode = if case .timeout = failure { .timeout } else { .engineError }
            if attempt >= maxAttempts {
                return .failed(code: code, message: "\(message) (after \(attempt) attempts)")
            }
            return .retry(after: backoff(afterAttempt: attempt), code: code, message: message)
        case .sessionNotConnected(let message):
            if now >= deadline {
                return .failed(code: .sessionUnavailable, message: "session stayed unavailable until the job's deadline: \(message)")
            }
            return .defer_(after: sessionRecheck, code: .sessionUnavailable, message: message)
        case .rateLimited(let retryAfter):
            if now >= deadline {
                return .failed(code: .rateLimited, message: "still rate limited at the job's deadline")
            }
            return .defer_(after: retryAfter ?? .seconds(1), code: .rateLimited, message: "rate limited")
        }
    }
}
