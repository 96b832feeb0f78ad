import AsyncHTTPClient
import Foundation
import JWTKit
import Logging
import NIOCore
import NIOHTTP1

/// The frontend's signing keys, fetched from its JWKS URL and cached.
///
/// A token naming a `kid` the cache lacks causes one fetch (the frontend rotated its keys), but at
/// most one per `refreshCooldown`: tokens with made-up `kid`s cannot make the gateway hammer the
/// frontend. Concurrent requests share one fetch. After `maxKeyAge` the next request fetches again,
/// so a key dropped from the JWKS stops being accepted. A failed fetch keeps the keys it had.
public actor JWKSKeys {
    public enum Failure: Error, Sendable, Equatable {
        /// The token names no key the JWKS has (after a refresh, or within the cooldown).
        case unknownKey
    }

    let url: String
    let client: HTTPClient
    let refreshCooldown: Duration
    let maxKeyAge: Duration
    let logger: Logger
    /// The time; a test passes its own to step past the cooldown without sleeping.
    let now: @Sendable () -> ContinuousClock.Instant

    private var keys = JWTKeyCollection()
    private var kids: Set<String> = []
    private var fetchedAt: ContinuousClock.Instant?
    private var fetching: Task<Void, Never>?
    /// Fetches made, successful or not: for tests and logs.
    public private(set) var fetchCount = 0

    public init(url: String, client: HTTPClient = .shared, refreshCooldown: Duration = .seconds(30), maxKeyAge: Duration = .seconds(600),
                logger: Logger, now: @escaping @Sendable () -> ContinuousClock.Instant = { .now }) {
        self.now = now
        self.url = url
        self.client = client
        self.refreshCooldown = refreshCooldown
        self.maxKeyAge = maxKeyAge
        self.logger = logger
    }

    /// The keys, once they hold `kid`; fetching first if the cache is old, or if it lacks `kid` and
    /// the cooldown has passed.
    public func keys(for kid: String) async throws(Failure) -> JWTKeyCollection {
        let time = now()
        let stale = fetchedAt.map { time - $0 >= maxKeyAge } ?? true
        let mayRefresh = fetchedAt.map { time - $0 >= refreshCooldown } ?? true
        if stale || (!kids.contains(kid) && mayRefresh) {
            await refresh()
        }
        guard kids.contains(kid) else { throw .unknownKey }
        return keys
    }

    /// One fetch, shared by every caller that arrives while it runs.
    private func refresh() async {
        if let fetching {
            await fetching.value
            return
        }
        let task = Task { await self.fetch() }
        fetching = task
        await task.value
        fetching = nil
    }

    private func fetch() async {
        fetchCount += 1
        fetchedAt = now()
        do {
            var request = HTTPClientRequest(url: url)
            request.headers.add(name: "Accept", value: "application/json")
            let response = try await client.execute(request, timeout: .seconds(5))
            guard response.status == .ok else {
                logger.warning("JWKS fetch failed", metadata: ["url": "\(url)", "status": "\(response.status.code)"])
                return
            }
            let body = try await response.body.collect(upTo: 1 << 20)
            let jwks = try JSONDecoder().decode(JWKS.self, from: Data(body.readableBytesView))
            let collection = JWTKeyCollection()
            var loaded: Set<String> = []
            for jwk in jwks.keys {
                // Keys without a kid, or of a type jwt-kit cannot use, are skipped, not fatal.
                guard let kid = jwk.keyIdentifier?.string, (try? await collection.add(jwk: jwk)) != nil else { continue }
                loaded.insert(kid)
            }
            keys = collection
            kids = loaded
            fetchedAt = now()
            logger.debug("JWKS fetched", metadata: ["url": "\(url)", "keys": "\(loaded.count)"])
        } catch {
            logger.warning("JWKS fetch failed", metadata: ["url": "\(url)", "error": "\(error)"])
        }
    }
}
