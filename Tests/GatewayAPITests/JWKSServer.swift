import Foundation
import Hummingbird
import JWTKit
import Synchronization
import TestSupport

/// A frontend's JWKS endpoint on 127.0.0.1: serves the public halves of the keys it is given,
/// counts the fetches, and signs login tokens with the private halves.
final class JWKSServer: Sendable {
    private struct State {
        var published: [String: ES256PrivateKey] = [:]
        var fetches = 0
    }

    private let state = Mutex(State())
    private let task: Task<Void, any Error>
    let url: String

    private init(task: Task<Void, any Error>, url: String) {
        self.task = task
        self.url = url
    }

    static func start() async throws -> JWKSServer {
        let (stream, continuation) = AsyncStream<Int>.makeStream()
        let box = Mutex<JWKSServer?>(nil)
        let router = Router()
        router.get("/jwks.json") { _, _ -> String in
            guard let server = box.withLock({ $0 }) else { throw HTTPError(.serviceUnavailable) }
            return try server.document()
        }
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                              onServerRunning: { channel in continuation.yield(channel.localAddress?.port ?? 0) }, logger: TestEnvironment.logger)
        let task = Task { try await app.run() }
        var port = 0
        for await value in stream { port = value; break }
        let server = JWKSServer(task: task, url: "http://127.0.0.1:\(port)/jwks.json")
        box.withLock { $0 = server }
        return server
    }

    /// A server publishing one new key under `kid`, and that key.
    static func start(publishing kid: String) async throws -> (JWKSServer, ES256PrivateKey) {
        let server = try await start()
        let key = ES256PrivateKey()
        server.publish(key, kid: kid)
        return (server, key)
    }

    /// Publishes `key` under `kid` from the next fetch on.
    func publish(_ key: ES256PrivateKey, kid: String) {
        state.withLock { $0.published[kid] = key }
    }

    var fetches: Int { state.withLock { $0.fetches } }

    func stop() { task.cancel() }

    private func document() throws -> String {
        let keys = state.withLock { state in
            state.fetches += 1
            return state.published
        }
        let jwks = JWKS(keys: keys.sorted { $0.key < $1.key }.map { kid, key in
            JWK.ecdsa(.es256, identifier: JWKIdentifier(string: kid), x: key.parameters?.x, y: key.parameters?.y, curve: .p256)
        })
        return String(decoding: try JSONEncoder().encode(jwks), as: UTF8.self)
    }
}

/// The claims a frontend puts in a login token.
struct TestLoginClaims: JWTPayload {
    var sub = "person-1"
    var iss = "https://app.example"
    var aud = ["wa-gateway"]
    var exp = Date().timeIntervalSince1970 + 300
    var nbf: Double?
    var org: String? = "acme"
    var role: String? = "member"

    func verify(using algorithm: some JWTAlgorithm) async throws {}

    /// Signed with `key`, its header naming `kid`.
    func signed(with key: ES256PrivateKey, kid: String) async throws -> String {
        let keys = JWTKeyCollection()
        await keys.add(ecdsa: key, kid: JWKIdentifier(string: kid))
        return try await keys.sign(self, kid: JWKIdentifier(string: kid))
    }
}
