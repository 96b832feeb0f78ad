/// A run: jobs of one chat taken by one claim, sent one after another by one worker, in order.
///
/// The worker sends the next job of a run only once the one before it is done: sent, or failed for
/// good (as when each job was claimed alone, the chat then moves on). When a job must run again
/// (a retry, or a deferral such as a rate limit), nothing behind it may go first, so the rest of the
/// run is given back to the queue with it (`heldBack`), without spending an attempt.
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
