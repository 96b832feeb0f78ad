import Foundation
import Logging
import OutboxCore
import RedisClient
import Synchronization

/// What the gate said about one dispatch.
public enum Admission: Sendable, Equatable {
    /// Go ahead; hold `token` until the result is recorded, then `release` it.
    case granted(token: String)
    /// Not now: try again after `wait`.
    case wait(Duration, reason: WaitReason)
}

public enum WaitReason: String, Sendable {
    /// Another process is dispatching this very message.
    case dispatchInProgress = "dispatch_in_progress"
    case rateLimited = "rate_limited"
    case pacing
    case budgetExhausted = "budget_exhausted"
    /// Redis cannot be reached: limits cannot be checked, so nothing is dispatched (fail closed).
    case coordinationUnavailable = "coordination_unavailable"
}

/// A lock held on one message id during its dispatch.
public struct MessageLock: Sendable, Hashable {
    public var session: String
    public var messageID: String
    public var token: String

    public init(session: String, messageID: String, token: String) {
        self.session = session
        self.messageID = messageID
        self.token = token
    }
}

/// Shared rate limits, anti-ban pacing and dispatch locks, kept in Redis for every process.
///
/// - One round trip per claimed batch: a Lua script (EVALSHA, pipelined for the batch) checks the message's dispatch lock, the
///   session's GCRA rate limit, its pacing gap and its hourly and daily budgets, and only if all
///   pass takes the lock and consumes from each. Time comes from Redis, so machines with skewed
///   clocks agree.
/// - Every key of a session carries the hash tag `{s:SESSION}`, so a script's keys share a slot
///   and the scheme works unchanged on Redis Cluster; every key expires, so memory stays bounded.
/// - Fail closed: when Redis cannot be reached the answer is `.wait(…, .coordinationUnavailable)`,
///   never "go ahead".
public final class Coordinator: Sendable {
    public let redis: RedisDatabase
    public let prefix: String
    /// How long a dispatch lock lives if its holder dies: longer than any dispatch.
    public let lockTTL: Duration
    private let logger: Logger
    private let available = Atomic<Bool>(true)

    public init(redis: RedisDatabase, prefix: String = "wa-outbox", lockTTL: Duration = .seconds(35), logger: Logger) {
        self.redis = redis
        self.prefix = prefix
        self.lockTTL = lockTTL
        self.logger = logger
    }

    /// False after a Redis call failed, until one succeeds again (for readiness).
    public var isAvailable: Bool { available.load(ordering: .relaxed) }

    func key(_ session: String, _ suffix: String) -> String { "\(prefix):{s:\(session)}:\(suffix)" }

    /// One dispatch to admit.
    public struct Request: Sendable {
        public var session: String
        public var messageID: String
        public var limits: SessionLimits

        public init(session: String, messageID: String, limits: SessionLimits) {
            self.session = session
            self.messageID = messageID
            self.limits = limits
        }
    }

    /// The gate before a dispatch: see the type's documentation.
    public func admit(session: String, messageID: String, limits: SessionLimits) async -> Admission {
        await admit([Request(session: session, messageID: messageID, limits: limits)])[0]
    }

    /// The gate for a whole claimed batch: every request's script call is pipelined, so a batch
    /// costs one round trip. Requests are decided in order, so two for one session share its limit.
    public func admit(_ requests: [Request]) async -> [Admission] {
        guard !requests.isEmpty else { return [] }
        let tokens = requests.map { _ in UUID().uuidString }
        do {
            var replies = try await redis.pipeline(admitCommands(requests, tokens: tokens, sha: Self.admitScript.sha ?? ""))
            if Self.admitScript.sha == nil || replies.contains(where: { if case .error(let text) = $0 { text.hasPrefix("NOSCRIPT") } else { false } }) {
                // First use on this server, or after SCRIPT FLUSH: load it and ask again.
                try await redis.loadScript(Self.admitScript)
                replies = try await redis.pipeline(admitCommands(requests, tokens: tokens, sha: Self.admitScript.sha ?? ""))
            }
            markAvailable(true)
            return zip(replies, tokens).map { reply, token in Self.admission(reply, token: token) }
        } catch {
            markAvailable(false, error)
            return requests.map { _ in .wait(.seconds(1), reason: .coordinationUnavailable) }
        }
    }

    private func admitCommands(_ requests: [Request], tokens: [String], sha: String) -> [RedisCommand] {
        zip(requests, tokens).map { request, token in
            let session = request.session
            let limits = request.limits
            return RedisCommand("EVALSHA", [
                sha, 5,
                key(session, "lock:\(request.messageID)"), key(session, "rate"), key(session, "pace"),
                key(session, "budget:h"), key(session, "budget:d"),
                token, Int(lockTTL.milliseconds), 1_000 / max(limits.ratePerSecond, 0.001), max(limits.burst, 1),
                limits.nextGapMilliseconds(), limits.hourlyBudget ?? 0, limits.dailyBudget ?? 0,
            ])
        }
    }

    private static func admission(_ reply: RedisValue, token: String) -> Admission {
        guard let values = reply.array, values.count == 2, let code = values[0].int, let wait = values[1].int else {
            return .wait(.seconds(1), reason: .coordinationUnavailable)
        }
        let delay = Duration.milliseconds(max(wait, 1))
        switch code {
        case 0: return .granted(token: token)
        case 1: return .wait(delay, reason: .dispatchInProgress)
        case 2: return .wait(delay, reason: .rateLimited)
        case 3: return .wait(delay, reason: .pacing)
        default: return .wait(delay, reason: .budgetExhausted)
        }
    }

    /// Releases dispatch locks (only those still holding their token), in one round trip.
    public func release(_ locks: [MessageLock]) async {
        guard !locks.isEmpty else { return }
        let commands = locks.map { lock in
            RedisCommand("EVAL", [Self.releaseSource, 1, key(lock.session, "lock:\(lock.messageID)"), lock.token])
        }
        do {
            _ = try await redis.pipeline(commands)
        } catch {
            // The locks expire by themselves after lockTTL.
            markAvailable(false, error)
        }
    }

    /// For the API tier's synchronous sends: consumes one send from the session's rate limit if it
    /// allows one now, else returns how long to wait (the 429's Retry-After). Pacing does not
    /// apply to a synchronous send: a person is waiting.
    public func checkRate(session: String, limits: SessionLimits) async throws -> Duration? {
        var unpaced = limits
        unpaced.pacing = false
        let probe = "sync-\(UUID().uuidString)"
        switch await admit(session: session, messageID: probe, limits: unpaced) {
        case .granted(let token):
            await release([MessageLock(session: session, messageID: probe, token: token)])
            return nil
        case .wait(let delay, .coordinationUnavailable):
            throw CoordinationUnavailable(retryAfter: delay)
        case .wait(let delay, _):
            return delay
        }
    }

    /// Runs `body` while holding the lock on an organization's idempotency key, waiting up to
    /// `wait` for a concurrent request with the same key to finish first. Combined with the outbox's
    /// unique key, the second request then returns the first one's result.
    public func withIdempotencyLock<T: Sendable>(
        org: String, key idempotencyKey: String, wait: Duration = .seconds(10), _ body: () async throws -> T
    ) async throws -> T {
        let lockKey = "\(prefix):{o:\(org)}:idem:\(idempotencyKey)"
        let token = UUID().uuidString
        let deadline = ContinuousClock.now + wait
        while true {
            let reply = try await redis.send("SET", lockKey, token, "NX", "PX", Int(lockTTL.milliseconds))
            if reply == .status("OK") { break }
            guard ContinuousClock.now < deadline else { throw IdempotencyKeyBusy(key: idempotencyKey) }
            try await Task.sleep(for: .milliseconds(20))
        }
        do {
            let value = try await body()
            _ = try? await redis.evaluate(Self.releaseScript, keys: [lockKey], arguments: [token])
            return value
        } catch {
            _ = try? await redis.evaluate(Self.releaseScript, keys: [lockKey], arguments: [token])
            throw error
        }
    }

    private func markAvailable(_ value: Bool, _ error: (any Error)? = nil) {
        let was = available.exchange(value, ordering: .relaxed)
        if was && !value {
            logger.error("Redis unavailable: dispatch paused until it is back (limits cannot be checked)", metadata: ["error": "\(error.map { "\($0)" } ?? "")"])
        } else if !was && value {
            logger.info("Redis available again: dispatch resumes")
        }
    }

    // KEYS: lock, rate (GCRA theoretical arrival time), pace (next allowed), hourly and daily counters.
    // ARGV: token, lock ttl ms, emission interval ms, burst, gap ms (0: no pacing), hourly, daily budget (0: none).
    // Returns {0, 0} when granted, else {reason, wait ms}: 1 locked (look again within a second),
    // 2 rate, 3 pacing, 4 budget.
    static let admitScript = RedisScript("""
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local holder = redis.call('GET', KEYS[1])
        if holder and holder ~= ARGV[1] then
            return {1, math.min(math.max(redis.call('PTTL', KEYS[1]), 1), 1000)}
        end
        local reason, wait = 0, 0
        local interval, burst = tonumber(ARGV[3]), tonumber(ARGV[4])
        local tat = tonumber(redis.call('GET', KEYS[2]) or '0')
        if tat < now then tat = now end
        local new_tat = tat + interval
        local allow_at = new_tat - burst * interval
        if allow_at > now then reason, wait = 2, allow_at - now end
        local gap = tonumber(ARGV[5])
        local next_at = tonumber(redis.call('GET', KEYS[3]) or '0')
        if next_at > now and next_at - now > wait then reason, wait = 3, next_at - now end
        local hourly, daily = tonumber(ARGV[6]), tonumber(ARGV[7])
        local to_hour = 3600000 - now % 3600000
        local to_day = 86400000 - now % 86400000
        if hourly > 0 and tonumber(redis.call('GET', KEYS[4]) or '0') >= hourly and to_hour > wait then reason, wait = 4, to_hour end
        if daily > 0 and tonumber(redis.call('GET', KEYS[5]) or '0') >= daily and to_day > wait then reason, wait = 4, to_day end
        if reason ~= 0 then return {reason, math.ceil(wait)} end
        redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
        redis.call('SET', KEYS[2], tostring(new_tat), 'PX', math.ceil(new_tat - now) + 1000)
        if gap > 0 then redis.call('SET', KEYS[3], tostring(now + gap), 'PX', gap + 1000) end
        if hourly > 0 then
            if redis.call('INCR', KEYS[4]) == 1 then redis.call('PEXPIRE', KEYS[4], to_hour) end
        end
        if daily > 0 then
            if redis.call('INCR', KEYS[5]) == 1 then redis.call('PEXPIRE', KEYS[5], to_day) end
        end
        return {0, 0}
        """)

    static let releaseSource = """
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
        return 0
        """
    static let releaseScript = RedisScript(releaseSource)
}

public struct CoordinationUnavailable: Error, Sendable {
    public var retryAfter: Duration
}

public struct IdempotencyKeyBusy: Error, Sendable, CustomStringConvertible {
    public var key: String
    public var description: String { "another request with idempotency key \(key) is still running" }
}
