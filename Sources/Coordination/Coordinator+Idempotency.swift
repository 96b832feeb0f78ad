import Foundation
import OutboxCore
import RedisClient

extension Coordinator {
    /// Runs `body` while holding the lock on an organization's idempotency key, waiting up to
    /// `wait` for a concurrent request with the same key to finish first. Combined with the outbox's
    /// unique key, the second request then returns the first one's result.
    ///
    /// When the first request succeeds its lock is left behind for a moment as `done`: every
    /// request still waiting then runs `body` at once, side by side, and finds the job as a replay,
    /// instead of taking the lock one after another (fifty retries of one key, each behind the last,
    /// outlasted `wait` on a loaded machine). A failed first request frees the lock for the next.
    public func withIdempotencyLock<T: Sendable>(
        org: String, key idempotencyKey: String, wait: Duration = .seconds(10), _ body: () async throws -> T
    ) async throws -> T {
        let lockKey = "\(prefix):{o:\(org)}:idem:\(idempotencyKey)"
        let token = UUID().uuidString
        let deadline = ContinuousClock.now + wait
        while true {
            // NX with GET (Redis 7): nil when this request took the lock, else the holder's value.
            let holder = try await redis.send("SET", lockKey, token, "NX", "PX", Int(lockTTL.milliseconds), "GET")
            if holder == .null { break }
            if holder == .bulk(Array(Self.idempotencyDone.utf8)) { return try await body() }
            guard ContinuousClock.now < deadline else { throw IdempotencyKeyBusy(key: idempotencyKey) }
            try await Task.sleep(for: .milliseconds(20))
        }
        do {
            let value = try await body()
            _ = try? await redis.evaluate(Self.finishScript, keys: [lockKey], arguments: [token, Self.idempotencyDone, 5_000])
            return value
        } catch {
            _ = try? await redis.evaluate(Self.releaseScript, keys: [lockKey], arguments: [token])
            throw error
        }
    }

    /// The value of an idempotency lock whose request succeeded.
    static let idempotencyDone = "done"

    /// Replaces the lock's token (ARGV[1]) with ARGV[2] for ARGV[3] ms, if it still holds it.
    static let finishScript = RedisScript("""
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
        return false
        """)
}

public struct IdempotencyKeyBusy: Error, Sendable, CustomStringConvertible {
    public var key: String
    public var description: String { "another request with idempotency key \(key) is still running" }
}
