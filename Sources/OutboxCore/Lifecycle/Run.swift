/// A run: jobs of one session's slot taken by one claim (one chat's, or one each of several chats),
/// sent one after another by one worker, each chat's in order.
///
/// The worker sends the next job of a run only once the one before it is done: sent, or failed for
/// good (as when each job was claimed alone, the chat then moves on). When a job must run again
/// (a retry, or a deferral such as a rate limit), nothing of its chat behind it may go first, so
/// the rest of its chat in the run is given back to the queue with it (`heldBack`), without
/// spending an attempt; when it waits for its whole session, or the worker lost it (`holdsRun`),
/// so does the rest of the run. Other chats of the run go on.
extension Outcome {
    /// For each job of a run behind a job that ended with this outcome: nil when the run goes on;
    /// otherwise the deferral that gives it back. It waits as long as that job, with the same code
    /// and message (a session-wide wait or restriction reads the same from every job that carries
    /// it), except that no job behind is marked as maybe sent: it never reached the engine.
    public var heldBack: Outcome? {
        switch self {
        case .succeeded, .failed:
            return nil
        case .retry(let delay, let code, let message), .defer_(let delay, let code, let message):
            let neverSent: ErrorCode = code == .timeout || code == .workerLost ? .engineError : code
            return .defer_(after: delay, code: neverSent, message: message)
        }
    }
}

extension Outcome {
    /// Whether this outcome holds back the whole rest of its run, not only its chat's: the session
    /// waits out a rate limit, or is not connected, or is restricted; or the worker lost the job
    /// (shut down or cut off mid-call), and sends nothing more of what it holds. Other failures
    /// stop their chat alone, and the run's other chats go on as each would have been claimed on
    /// its own: a chat the engine keeps failing cannot hold back the rest of its session.
    public var holdsRun: Bool {
        switch self {
        case .retry(_, let code, _), .defer_(_, let code, _):
            [.rateLimited, .sessionUnavailable, .accountRestricted, .workerLost].contains(code)
        case .succeeded, .failed:
            false
        }
    }
}

/// What is held back as a run goes on: the chats that stopped, and whether the whole run did.
public struct RunProgress: Sendable {
    private var stoppedChats: [String: Outcome] = [:]

    public init() {}

    /// Notes how a job of `chat` ended (nil: handed back unsent). False when the rest of the run
    /// goes back (a hand-back, or `holdsRun`).
    public mutating func note(_ outcome: Outcome?, chat: String) -> Bool {
        guard let outcome else { return false }
        guard outcome.heldBack != nil else { return true }
        if outcome.holdsRun { return false }
        stoppedChats[chat] = outcome
        return true
    }

    /// The outcome a job of `chat` is held back behind, if its chat stopped earlier in the run.
    public func stopped(_ chat: String) -> Outcome? {
        stoppedChats[chat]
    }
}
