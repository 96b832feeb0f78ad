import RedisClient

extension Coordinator {
    /// For the API's synchronous sends: how long until the session's rate limit allows a send, or
    /// nil if it allows one now (the 429's `Retry-After`). It only looks: the worker's admission,
    /// which every job goes through, is what consumes the limit, so a synchronous send is counted
    /// once. Pacing does not make a synchronous send wait for an answer here: a person is waiting,
    /// and the worker keeps the gap anyway.
    public func rateRetryAfter(session: String, limits: SessionLimits) async throws -> Duration? {
        let reply: RedisValue
        do {
            reply = try await redis.evaluate(Self.peekScript, keys: [key(session, "rate")],
                                             arguments: [1_000 / max(limits.ratePerSecond, 0.001), max(limits.burst, 1)])
            markAvailable(true)
        } catch {
            markAvailable(false, error)
            throw CoordinationUnavailable(retryAfter: .seconds(1))
        }
        guard let wait = reply.int, wait > 0 else { return nil }
        return .milliseconds(wait)
    }

    // KEYS: rate (GCRA theoretical arrival time). ARGV: emission interval ms, burst. Returns the
    // wait in ms before one more send fits (0: now). Writes nothing.
    static let peekScript = RedisScript("""
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
        local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
        if tat < now then tat = now end
        local allow_at = tat + interval - burst * interval
        if allow_at > now then return math.ceil(allow_at - now) end
        return 0
        """)
}

public struct CoordinationUnavailable: Error, Sendable {
    public var retryAfter: Duration
}
