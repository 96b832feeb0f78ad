import Foundation
import HTTPSurface
import Hummingbird
import HummingbirdTesting
import JWTKit
import Logging
import NIOCore
import OutboxCore
import OutboxStore
import PostgresClient
import Synchronization
import Testing
import TestSupport
@testable import GatewayAPI

/// A migrated database of the test's own.
func migratedDatabase() async throws -> PostgresDatabase {
    try await migratedDatabaseAndURL().database
}

func migratedDatabaseAndURL() async throws -> (database: PostgresDatabase, url: String) {
    let url = try await TestEnvironment.freshDatabase(prefix: "auth")
    let database = PostgresDatabase(configuration: PostgresConfiguration(url), maxConnections: 4, logger: TestEnvironment.logger)
    try await Migrator(migrations: try Migration.load(directory: TestEnvironment.migrationsDirectory), logger: TestEnvironment.logger).migrate(database)
    return (database, url)
}

/// A router with the authenticator in front of one route that needs `send`, answering the org.
func authenticatedRouter(_ authenticator: Authenticator) -> Router<GatewayContext> {
    let router = Router(context: GatewayContext.self)
    router.add(middleware: APIErrorMiddleware<GatewayContext>())
    router.group("/api/v1").add(middleware: authenticator).get("/send") { _, context -> String in
        let principal = try context.require(.send)
        return "\(principal.org) \(principal.capabilities.map(\.rawValue).sorted().joined(separator: ",")) \(principal.subject)"
    }
    return router
}

/// The status and error code (or body) a GET of /api/v1/send answers with `authorization`; a
/// refused token (401 with a challenge) reads `challenged`.
func call(_ router: Router<GatewayContext>, authorization: String?) async throws -> (status: Int, body: String) {
    let app = Application(router: router)
    return try await app.test(.router) { client in
        var headers = HTTPFields()
        if let authorization { headers[.authorization] = authorization }
        return try await client.execute(uri: "/api/v1/send", method: .get, headers: headers) { response in
            let body = String(buffer: response.body)
            if response.status.code >= 400, let envelope = try? JSONDecoder().decode(APIError.Envelope.self, from: Data(body.utf8)) {
                let challenged = response.headers[.wwwAuthenticate] == "Bearer error=\"invalid_token\"" && envelope.error.code == "unauthorized"
                return (Int(response.status.code), challenged ? "challenged" : envelope.error.code)
            }
            return (Int(response.status.code), body)
        }
    }
}

@Suite("API keys")
struct APIKeyTests {
    @Test func createVerifyRevoke() async throws {
        let db = try await migratedDatabase()
        let created = try await APIKeys.create(org: "acme", name: "ci", permissions: ["send", "read", "send"], in: db)
        #expect(created.key.hasPrefix(created.record.prefix + "_"))
        #expect(created.record.prefix.hasPrefix("wak_live_") && created.record.prefix.count == 17)
        #expect(created.record.permissions == ["read", "send"])

        let verified = try await APIKeys.verify(created.key, in: db)
        #expect(verified?.id == created.record.id && verified?.org == "acme")
        #expect(try await APIKeys.list(org: "acme", in: db).first?.lastUsedAt != nil)

        // The right prefix with another secret is refused; so is a key of another shape.
        let secret = created.key.dropFirst(18)
        let wrong = created.record.prefix + "_" + String(secret.reversed())
        #expect(try await APIKeys.verify(wrong, in: db) == nil)
        #expect(try await APIKeys.verify(created.record.prefix, in: db) == nil)

        // The secret is stored nowhere in clear.
        let stored = try await db.query("SELECT count(*) FROM wa_outbox.api_keys WHERE position(\(String(secret)) IN row(api_keys.*)::text) > 0")
        #expect(try stored[0].decode(Int.self, at: 0) == 0)

        try await APIKeys.revoke(id: created.record.id, in: db)
        #expect(try await APIKeys.verify(created.key, in: db) == nil)
        let listed = try await APIKeys.list(org: "acme", in: db)
        #expect(listed.count == 1 && listed[0].revokedAt != nil)
        #expect(try await APIKeys.list(org: "other", in: db).isEmpty)
        await db.close()
    }

    @Test func revokeIsScopedToTheOrganization() async throws {
        let db = try await migratedDatabase()
        let created = try await APIKeys.create(org: "acme", name: "ci", permissions: ["send"], in: db)
        await #expect(throws: OutboxError.self) { try await APIKeys.revoke(id: created.record.id, org: "other", in: db) }
        #expect(try await APIKeys.verify(created.key, in: db) != nil)
        await db.close()
    }

    @Test func createRefusesUnknownOrNoPermissions() async throws {
        let db = try await migratedDatabase()
        for permissions in [["send", "admin"], []] {
            do {
                _ = try await APIKeys.create(org: "acme", name: "ci", permissions: permissions, in: db)
                Issue.record("created a key with \(permissions)")
            } catch {
                #expect(error.code == .validationError)
            }
        }
        await db.close()
    }

    @Test func commandLine() async throws {
        let (db, url) = try await migratedDatabaseAndURL()
        let cli = try TestEnvironment.executable()
        let created = try await Subprocess.run(cli, ["apikeys", "create", "--database-url", url, "--org", "acme", "--name", "crm", "--permissions", "send, read"])
        #expect(created.status == 0)
        let key = created.output.trimmingCharacters(in: .whitespacesAndNewlines)
        let record = try #require(try await APIKeys.verify(key, in: db))
        #expect(record.name == "crm" && record.permissions == ["read", "send"])

        let listed = try await Subprocess.run(cli, ["apikeys", "list", "--database-url", url, "--org", "acme"])
        #expect(listed.status == 0 && listed.output.contains(record.prefix) && !listed.output.contains(key))
        let refused = try await Subprocess.run(cli, ["apikeys", "create", "--database-url", url, "--org", "acme", "--name", "x", "--permissions", "fly"])
        #expect(refused.status != 0 && refused.output.contains("validation_error"))

        let revoked = try await Subprocess.run(cli, ["apikeys", "revoke", "--database-url", url, "--id", String(record.id)])
        #expect(revoked.status == 0)
        #expect(try await APIKeys.verify(key, in: db) == nil)
        await db.close()
    }

    @Test func permissionsAreTheCapabilities() {
        #expect(APIKeys.knownPermissions.sorted() == Capability.allCases.map(\.rawValue).sorted())
    }

    @Test func tokenShape() {
        let token = APIKeyToken.generate()
        #expect(APIKeyToken(parsing: token.key) == token)
        #expect(APIKeyToken(parsing: token.key.uppercased()) == nil)
        #expect(APIKeyToken(parsing: token.key + "0") == nil)
        #expect(APIKeyToken(parsing: token.prefix + "-" + token.key.dropFirst(18)) == nil)
        #expect(APIKeyToken.generate().key != token.key)
    }
}

@Suite("Authenticator")
struct AuthenticatorTests {
    @Test func apiKeysThroughTheMiddleware() async throws {
        let db = try await migratedDatabase()
        let sender = try await APIKeys.create(org: "acme", name: "sender", permissions: ["send"], in: db)
        let reader = try await APIKeys.create(org: "acme", name: "reader", permissions: ["read"], in: db)
        let clock = SteppedClock()
        let router = authenticatedRouter(Authenticator(configuration: GatewayAuthConfiguration(), database: db,
                                                       keyCache: APIKeyCache(now: clock.now), logger: TestEnvironment.logger))

        #expect(try await call(router, authorization: nil) == (401, "unauthorized"))
        #expect(try await call(router, authorization: "Bearer wak_live_00000000_" + String(repeating: "0", count: 64)) == (401, "challenged"))
        #expect(try await call(router, authorization: "Bearer not-a-key") == (401, "challenged"))
        #expect(try await call(router, authorization: "Basic " + sender.key) == (401, "challenged"))
        #expect(try await call(router, authorization: "Bearer " + reader.key) == (403, "forbidden"))
        #expect(try await call(router, authorization: "Bearer " + sender.key) == (200, "acme send key:\(sender.record.prefix)"))
        #expect(try await call(router, authorization: "bearer  " + sender.key) == (200, "acme send key:\(sender.record.prefix)"))

        // A revoked key is refused once the cache's entry, at most its lifetime old, has lapsed.
        try await APIKeys.revoke(id: sender.record.id, in: db)
        #expect(try await call(router, authorization: "Bearer " + sender.key) == (200, "acme send key:\(sender.record.prefix)"))
        clock.advance(by: APIKeyCache.defaultTTL)
        #expect(try await call(router, authorization: "Bearer " + sender.key) == (401, "challenged"))
        // A refusal is not remembered: a wrong secret under a cached key's prefix still goes to the database.
        let forged = reader.key.dropLast() + (reader.key.hasSuffix("0") ? "1" : "0")
        #expect(try await call(router, authorization: "Bearer " + forged) == (401, "challenged"))
        await db.close()
    }

    @Test func loginTokensThroughTheMiddleware() async throws {
        let (server, key) = try await JWKSServer.start(publishing: "k1")
        defer { server.stop() }
        let configuration = GatewayAuthConfiguration(jwt: .init(jwksURL: server.url, issuer: "https://app.example", audience: "wa-gateway"))
        let authenticator = Authenticator(apiKeys: { _ in nil }, loginTokens: LoginTokens(
            configuration: configuration.jwt!, keys: JWKSKeys(url: server.url, logger: TestEnvironment.logger)), logger: TestEnvironment.logger)
        let router = authenticatedRouter(authenticator)

        let member = try await TestLoginClaims().signed(with: key, kid: "k1")
        #expect(try await call(router, authorization: "Bearer " + member) == (200, "acme read,send jwt:person-1"))
        var viewer = TestLoginClaims()
        viewer.role = "viewer"
        #expect(try await call(router, authorization: "Bearer " + (try await viewer.signed(with: key, kid: "k1"))) == (403, "forbidden"))
        var expired = TestLoginClaims()
        expired.exp = Date().timeIntervalSince1970 - 3600
        #expect(try await call(router, authorization: "Bearer " + (try await expired.signed(with: key, kid: "k1"))) == (401, "challenged"))
        #expect(try await call(router, authorization: "Bearer " + member.dropLast(2) + "AA") == (401, "challenged"))
    }
}

@Suite("Login tokens")
struct LoginTokenTests {
    /// Tokens checked against `server`'s JWKS, keys refetched for an unknown kid at most every `cooldown`.
    func verifier(_ server: JWKSServer, cooldown: Duration = .seconds(30), roles: [String: Set<Capability>] = GatewayAuthConfiguration.defaultRoles,
                  now: @escaping @Sendable () -> ContinuousClock.Instant = { .now }) -> LoginTokens {
        let configuration = GatewayAuthConfiguration.JWT(jwksURL: server.url, issuer: "https://app.example", audience: "wa-gateway", roles: roles,
                                                         refreshCooldown: cooldown)
        return LoginTokens(configuration: configuration, keys: JWKSKeys(url: server.url, refreshCooldown: cooldown, logger: TestEnvironment.logger, now: now))
    }

    func refusal(_ verifier: LoginTokens, _ token: String) async -> String? {
        do {
            _ = try await verifier.principal(from: token)
            return nil
        } catch {
            return error.reason
        }
    }

    @Test func validTokenNamesOrgAndCapabilities() async throws {
        let (server, key) = try await JWKSServer.start(publishing: "k1")
        defer { server.stop() }
        let tokens = verifier(server)
        var claims = TestLoginClaims()
        claims.role = "admin"
        let principal = try await tokens.principal(from: try await claims.signed(with: key, kid: "k1"))
        #expect(principal == Principal(org: "acme", capabilities: [.send, .read, .operate], subject: "jwt:person-1"))
        #expect(await tokens.keys.fetchCount == 1)

        // The claim names are configuration: here the organization is read from `sub`, the role from `iss`.
        let renamed = GatewayAuthConfiguration.JWT(jwksURL: server.url, orgClaim: "sub", roleClaim: "iss", roles: ["https://app.example": [.read]])
        let other = try await LoginTokens(configuration: renamed, keys: tokens.keys).principal(from: try await claims.signed(with: key, kid: "k1"))
        #expect(other == Principal(org: "person-1", capabilities: [.read], subject: "jwt:person-1"))
    }

    @Test func claimsAreChecked() async throws {
        let (server, key) = try await JWKSServer.start(publishing: "k1")
        defer { server.stop() }
        let tokens = verifier(server)
        func sign(_ change: (inout TestLoginClaims) -> Void) async throws -> String {
            var claims = TestLoginClaims()
            change(&claims)
            return try await claims.signed(with: key, kid: "k1")
        }
        #expect(await refusal(tokens, try await sign { $0.exp = Date().timeIntervalSince1970 - 120 }) == "login token expired")
        #expect(await refusal(tokens, try await sign { $0.exp = Date().timeIntervalSince1970 - 10 }) == nil, "within the leeway")
        #expect(await refusal(tokens, try await sign { $0.nbf = Date().timeIntervalSince1970 + 120 }) == "login token not valid yet")
        #expect(await refusal(tokens, try await sign { $0.iss = "https://evil.example" }) == "login token from another issuer")
        #expect(await refusal(tokens, try await sign { $0.aud = ["another-api"] }) == "login token meant for another audience")
        #expect(await refusal(tokens, try await sign { $0.org = nil })?.hasPrefix("login token names no organization") == true)
        // Signed by a key the JWKS does not hold, under a kid it does: the signature fails.
        #expect(await refusal(tokens, try await TestLoginClaims().signed(with: ES256PrivateKey(), kid: "k1")) == "login token signature or format invalid")
        // An HMAC token under the JWKS key's kid: refused before any key is used.
        let hmac = JWTKeyCollection()
        await hmac.add(hmac: HMACKey(from: String(repeating: "s", count: 32)), digestAlgorithm: .sha256, kid: "k1")
        #expect(await refusal(tokens, try await hmac.sign(TestLoginClaims(), kid: "k1")) == "login token algorithm not accepted")
        #expect(await refusal(tokens, "not.a.jwt") != nil)
        #expect(await refusal(tokens, "") != nil)
    }

    @Test func unknownKidRefetchesAtMostOncePerCooldown() async throws {
        let server = try await JWKSServer.start()
        defer { server.stop() }
        let first = ES256PrivateKey(), second = ES256PrivateKey()
        server.publish(first, kid: "k1")
        // The cache's clock is the test's: a loaded machine cannot make the cooldown pass early.
        let cooldown = Duration.seconds(30)
        let clock = SteppedClock()
        let tokens = verifier(server, cooldown: cooldown, now: clock.now)
        _ = try await tokens.principal(from: try await TestLoginClaims().signed(with: first, kid: "k1"))
        #expect(server.fetches == 1)

        // The frontend rotates in k2. Within the cooldown the gateway does not look again.
        server.publish(second, kid: "k2")
        let rotated = try await TestLoginClaims().signed(with: second, kid: "k2")
        #expect(await refusal(tokens, rotated) == "login token signed with an unknown key")
        #expect(server.fetches == 1)

        // After it, one fetch finds k2.
        clock.advance(by: cooldown)
        #expect(await refusal(tokens, rotated) == nil)
        #expect(server.fetches == 2)

        // Tokens naming a kid nobody has: none fetch within the cooldown, 20 at once after it share one fetch.
        let bogus = try await TestLoginClaims().signed(with: second, kid: "k9")
        func burst() async {
            await withTaskGroup(of: Void.self) { group in
                for _ in 0..<20 { group.addTask { #expect(await refusal(tokens, bogus) == "login token signed with an unknown key") } }
            }
        }
        await burst()
        #expect(server.fetches == 2)
        clock.advance(by: cooldown)
        await burst()
        #expect(server.fetches == 3)
        #expect(await tokens.keys.fetchCount == 3)
    }
}

@Suite("Authentication configuration")
struct GatewayAuthConfigurationTests {
    @Test func fromEnvironment() throws {
        #expect(try GatewayAuthConfiguration.fromEnvironment([:]) == GatewayAuthConfiguration())
        let configuration = try GatewayAuthConfiguration.fromEnvironment([
            "WA_OUTBOX_JWKS_URL": "https://app.example/.well-known/jwks.json", "WA_OUTBOX_JWT_ISSUER": "https://app.example",
            "WA_OUTBOX_JWT_AUDIENCE": "wa", "WA_OUTBOX_JWT_ORG_CLAIM": "https://app.example/org", "WA_OUTBOX_JWT_ROLE_CLAIM": "roles",
            "WA_OUTBOX_JWT_ROLES": "owner=send,read,operate; viewer=read;nobody=",
        ])
        #expect(configuration.jwt == .init(jwksURL: "https://app.example/.well-known/jwks.json", issuer: "https://app.example", audience: "wa",
                                           orgClaim: "https://app.example/org", roleClaim: "roles",
                                           roles: ["owner": [.send, .read, .operate], "viewer": [.read], "nobody": []]))
        #expect(try GatewayAuthConfiguration.fromEnvironment(["WA_OUTBOX_JWKS_URL": "https://a.example/jwks"]).jwt?.roles
                == GatewayAuthConfiguration.defaultRoles)
    }

    @Test func malformedEnvironmentIsRefused() {
        for environment in [
            ["WA_OUTBOX_JWKS_URL": "ftp://a.example/jwks"], ["WA_OUTBOX_JWKS_URL": "not a url"],
            ["WA_OUTBOX_JWT_ISSUER": "https://app.example"],
            ["WA_OUTBOX_JWKS_URL": "https://a.example/jwks", "WA_OUTBOX_JWT_ROLES": "admin=send,fly"],
            ["WA_OUTBOX_JWKS_URL": "https://a.example/jwks", "WA_OUTBOX_JWT_ROLES": "admin"],
            ["WA_OUTBOX_JWKS_URL": "https://a.example/jwks", "WA_OUTBOX_JWT_ROLES": "a=send;a=read"],
        ] {
            #expect(throws: GatewayAuthConfiguration.Invalid.self, "\(environment)") { try GatewayAuthConfiguration.fromEnvironment(environment) }
        }
    }
}

/// A clock that moves only when the test moves it.
final class SteppedClock: Sendable {
    private let offset = Mutex(Duration.zero)
    private let start = ContinuousClock.now

    var now: @Sendable () -> ContinuousClock.Instant { { self.start + self.offset.withLock { $0 } } }

    func advance(by duration: Duration) { offset.withLock { $0 += duration } }
}
