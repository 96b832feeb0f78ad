import Foundation
import NIOConcurrencyHelpers
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
/// - One script call per batch it is given (the worker gives it 100 jobs at a time): a Lua script (EVALSHA) checks, for each job in turn, the
///   session's GCRA rate limit, its pacing gap, its hourly and daily budgets and the message's
///   dispatch lock, and only if all pass takes the lock and consumes from each. Time comes from Redis, so machines with skewed
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
    private let clusterMode = NIOLockedValueBox<Bool?>(nil)

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

    /// The gate for a whole claimed batch, in one round trip: one script call decides every
    /// request in order (two for one session share its limit). On Redis Cluster, where one script
    /// may only touch one slot, the batch becomes one call per session, pipelined.
    /// `holder` starts every lock token (a worker's id), so `releaseLocks(of:)` can let the locks of
    /// a holder found dead go.
    public func admit(_ requests: [Request], holder: String = "") async -> [Admission] {
        guard !requests.isEmpty else { return [] }
        // One random value per batch; the index makes each token unique.
        let batchToken = UUID().uuidString
        let tokens = requests.indices.map { "\(holder).\(batchToken).\($0)" }
        do {
            let groups = try await scriptGroups(requests)

            var replies = try await redis.pipeline(admitCommands(requests, groups, tokens: tokens, sha: Self.admitScript.sha ?? ""))
            if Self.admitScript.sha == nil || replies.contains(where: { if case .error(let text) = $0 { text.hasPrefix("NOSCRIPT") } else { false } }) {
                // First use on this server, or after SCRIPT FLUSH: load it and ask again.
                try await redis.loadScript(Self.admitScript)
                replies = try await redis.pipeline(admitCommands(requests, groups, tokens: tokens, sha: Self.admitScript.sha ?? ""))
            }
            markAvailable(true)
            var admissions = [Admission](repeating: .wait(.seconds(1), reason: .coordinationUnavailable), count: requests.count)
            for (group, reply) in zip(groups, replies) {
                let codes = reply.array ?? []
                for (position, index) in group.enumerated() where codes.count >= 2 * position + 2 {
                    admissions[index] = Self.admission(code: codes[2 * position].int, wait: codes[2 * position + 1].int, token: tokens[index])
                }
            }
            return admissions
        } catch {
            markAvailable(false, error)
            return requests.map { _ in .wait(.seconds(1), reason: .coordinationUnavailable) }
        }
    }

    /// Request indices per script call: all of them against one Redis server, one group per
    /// session against a cluster (asked once, by `INFO cluster`).
    private func scriptGroups(_ requests: [Request]) async throws -> [[Int]] {
        let clustered: Bool
        if let known = clusterMode.withLockedValue({ $0 }) {
            clustered = known
        } else {
            let info = try await redis.send("INFO", "cluster").string ?? ""
            clustered = info.contains("cluster_enabled:1")
            clusterMode.withLockedValue { $0 = clustered }
        }
        guard clustered else { return [Array(requests.indices)] }
        var order: [String] = []
        var bySession: [String: [Int]] = [:]
        for (index, request) in requests.enumerated() {
            if bySession[request.session] == nil { order.append(request.session) }
            bySession[request.session, default: []].append(index)
        }
        return order.map { bySession[$0]! }
    }

    private func admitCommands(_ requests: [Request], _ groups: [[Int]], tokens: [String], sha: String) -> [RedisCommand] {
        groups.map { group in
            var keys: [any RedisArgument] = []
            var arguments: [any RedisArgument] = [Int(lockTTL.milliseconds)]
            keys.reserveCapacity(6 * group.count)
            arguments.reserveCapacity(1 + 6 * group.count)
            for index in group {
                let request = requests[index]
                let session = request.session
                let limits = request.limits
                keys += [key(session, "lock:\(request.messageID)"), key(session, "rate"), key(session, "pace"),
                         key(session, "budget:h"), key(session, "budget:d"), key(session, "busy")]
                arguments += [tokens[index], 1_000 / max(limits.ratePerSecond, 0.001), max(limits.burst, 1),
                              limits.nextGapMilliseconds(), limits.hourlyBudget ?? 0, limits.dailyBudget ?? 0]
            }
            return RedisCommand("EVALSHA", [sha, keys.count] + keys + arguments)
        }
    }

    private static func admission(code: Int64?, wait: Int64?, token: String) -> Admission {
        guard let code, let wait else { return .wait(.seconds(1), reason: .coordinationUnavailable) }
        let delay = Duration.milliseconds(Int(max(wait, 1)))
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

    /// Extends held dispatch locks (only those still holding their token) to a full `lockTTL`, in
    /// one round trip: a lock lasts as long as the lease that protects its job.
    public func renew(_ locks: [MessageLock]) async {
        guard !locks.isEmpty else { return }
        let commands = locks.map { lock in
            RedisCommand("EVAL", [Self.renewSource, 1, key(lock.session, "lock:\(lock.messageID)"), lock.token, Int(lockTTL.milliseconds)])
        }
        do {
            _ = try await redis.pipeline(commands)
        } catch {
            markAvailable(false, error)
        }
    }

    /// After the engine answered a paced session's call (or failed to): the session's gap starts now.
    /// Without it the session stays busy until the lock's TTL runs out (the holder died mid-call).
    public func callEnded(_ lock: MessageLock, limits: SessionLimits) async {
        guard limits.pacing else { return }
        do {
            _ = try await redis.evaluate(Self.callEndedScript, keys: [key(lock.session, "busy"), key(lock.session, "pace")],
                                         arguments: [lock.token, limits.nextGapMilliseconds()])
        } catch {
            markAvailable(false, error)
        }
    }

    /// Lets go the dispatch locks of messages whose holder is known dead (its lease lapsed and its
    /// jobs were requeued), and the busy marks of its paced sessions: each is deleted only if its
    /// token still starts with that holder.
    public func releaseLocks(of messages: [(session: String, messageID: String, holder: String)]) async {
        guard !messages.isEmpty else { return }
        let commands = messages.flatMap { message in
            ["lock:\(message.messageID)", "busy"].map { suffix in
                RedisCommand("EVAL", [Self.releaseHolderSource, 1, key(message.session, suffix), message.holder + "."])
            }
        }
        do {
            _ = try await redis.pipeline(commands)
        } catch {
            // They expire by themselves after lockTTL.
            markAvailable(false, error)
        }
    }

    func markAvailable(_ value: Bool, _ error: (any Error)? = nil) {
        let was = available.exchange(value, ordering: .relaxed)
        if was && !value {
            logger.error("Redis unavailable: dispatch paused until it is back (limits cannot be checked)", metadata: ["error": "\(error.map { "\($0)" } ?? "")"])
        } else if !was && value {
            logger.info("Redis available again: dispatch resumes")
        }
    }

    // Decides n requests in order. KEYS, six per request: lock, rate (GCRA theoretical arrival
    // time), pace (next allowed), hourly and daily counters, busy (a paced session's call at its
    // engine). ARGV: lock ttl ms, then six per request: token, emission interval ms, burst, gap ms
    // (0: no pacing), hourly and daily budget (0: none). Returns two integers per request: {0, 0}
    // granted, else {reason, wait ms} with reason 1 locked (look again within a second), 2 rate,
    // 3 pacing, 4 budget. A paced grant marks the session busy until `callEnded` starts its gap:
    // the gap runs from the end of one engine call to the start of the next. Without pacing and
    // budgets a request costs three Redis calls: GET rate, SET lock NX, SET rate.
    static let admitScript = RedisScript("""
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local to_hour = 3600000 - now % 3600000
        local to_day = 86400000 - now % 86400000
        local ttl = ARGV[1]
        local out = {}
        for i = 0, #KEYS / 6 - 1 do
            local k, a = i * 6, i * 6 + 1
            local reason, wait = 0, 0
            local interval, burst, gap = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
            local hourly, daily = tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6])
            local tat = tonumber(redis.call('GET', KEYS[k + 2]) or '0')
            if tat < now then tat = now end
            local new_tat = tat + interval
            local allow_at = new_tat - burst * interval
            if allow_at > now then reason, wait = 2, allow_at - now end
            if gap > 0 then
                local next_at = tonumber(redis.call('GET', KEYS[k + 3]) or '0')
                if next_at - now > wait then reason, wait = 3, next_at - now end
                if redis.call('EXISTS', KEYS[k + 6]) == 1 and gap > wait then reason, wait = 3, gap end
            end
            if hourly > 0 and tonumber(redis.call('GET', KEYS[k + 4]) or '0') >= hourly and to_hour > wait then reason, wait = 4, to_hour end
            if daily > 0 and tonumber(redis.call('GET', KEYS[k + 5]) or '0') >= daily and to_day > wait then reason, wait = 4, to_day end
            if reason == 0 and not redis.call('SET', KEYS[k + 1], ARGV[a + 1], 'NX', 'PX', ttl) then
                reason, wait = 1, math.min(math.max(redis.call('PTTL', KEYS[k + 1]), 1), 1000)
            end
            if reason == 0 then
                redis.call('SET', KEYS[k + 2], tostring(new_tat), 'PX', math.ceil(new_tat - now) + 1000)
                if gap > 0 then redis.call('SET', KEYS[k + 6], ARGV[a + 1], 'PX', ttl) end
                if hourly > 0 and redis.call('INCR', KEYS[k + 4]) == 1 then redis.call('PEXPIRE', KEYS[k + 4], to_hour) end
                if daily > 0 and redis.call('INCR', KEYS[k + 5]) == 1 then redis.call('PEXPIRE', KEYS[k + 5], to_day) end
            end
            out[#out + 1] = reason
            out[#out + 1] = math.ceil(wait)
        end
        return out
        """)

    // After a paced session's engine call: KEYS busy, pace; ARGV token, gap ms. Clears the busy
    // mark this call set and starts the gap from now.
    static let callEndedScript = RedisScript("""
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
        local gap = tonumber(ARGV[2])
        redis.call('SET', KEYS[2], tostring(now + gap), 'PX', gap + 1000)
        return 0
        """)

    static let releaseSource = """
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
        return 0
        """
    static let releaseScript = RedisScript(releaseSource)

    static let renewSource = """
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
        return 0
        """

    static let releaseHolderSource = """
        local token = redis.call('GET', KEYS[1])
        if token and string.sub(token, 1, #ARGV[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
        return 0
        """
}
