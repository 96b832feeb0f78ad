import OutboxCore
import Synchronization

/// API keys this process verified recently, so that a request with a known key costs no query.
///
/// An entry lives `ttl` (2 s): a key revoked on any process is refused everywhere within that
/// time. Entries are found by the SHA-256 of the whole key, so only a key that was verified in full
/// (prefix and secret) is ever answered from here; a wrong secret always goes to the database.
/// Refusals are not remembered. At `capacity` entries the cache starts over: it stays small, and
/// thousands of live keys at once only cost their queries again.
public final class APIKeyCache: Sendable {
    public static let defaultTTL = Duration.seconds(2)

    struct Entry {
        var principal: Principal
        var expires: ContinuousClock.Instant
    }

    let ttl: Duration
    let capacity: Int
    /// The time; a test passes its own to step past the lifetime without sleeping.
    let now: @Sendable () -> ContinuousClock.Instant
    private let entries = Mutex<[[UInt8]: Entry]>([:])

    public init(ttl: Duration = APIKeyCache.defaultTTL, capacity: Int = 10_000,
                now: @escaping @Sendable () -> ContinuousClock.Instant = { .now }) {
        self.ttl = ttl
        self.capacity = capacity
        self.now = now
    }

    /// The principal of `token`: remembered if it was verified within `ttl`, else `verify`'s answer
    /// (remembered when it is a principal).
    public func principal(for token: String, verify: () async throws -> Principal?) async throws -> Principal? {
        let digest = APIKeyToken.hash(of: token)
        let time = now()
        if let known = entries.withLock({ $0[digest] }), known.expires > time {
            return known.principal
        }
        guard let principal = try await verify() else { return nil }
        let expires = time + ttl
        entries.withLock { entries in
            if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }
            entries[digest] = Entry(principal: principal, expires: expires)
        }
        return principal
    }
}
