import OutboxStore

/// The final `message.status` event of one job, for a synchronous request that waits for it.
public protocol JobEvents: Sendable {
    /// The job's final event (sent, edited, revoked, failed, canceled), or nil if it has none by
    /// `deadline` (the request then answers with the job still running).
    func final(org: String, jobID: Int64, until deadline: ContinuousClock.Instant) async -> StatusEvent?
}
