import Foundation

/// How the gateway authenticates callers: API keys always (they live in the database), login JWTs
/// when a JWKS URL is configured.
///
/// From the environment (`fromEnvironment`), or set by `wa-outbox api`'s options:
///
/// | variable | meaning | default |
/// | --- | --- | --- |
/// | `WA_OUTBOX_JWKS_URL` | the frontend's JWKS (`https://app.example/.well-known/jwks.json`) | unset: login JWTs are refused |
/// | `WA_OUTBOX_JWT_ISSUER` | the `iss` a token must carry | unset: not checked |
/// | `WA_OUTBOX_JWT_AUDIENCE` | a value the token's `aud` must contain | unset: not checked |
/// | `WA_OUTBOX_JWT_ORG_CLAIM` | the claim naming the person's organization | `org` |
/// | `WA_OUTBOX_JWT_ROLE_CLAIM` | the claim naming the role (a string, or an array of strings) | `role` |
/// | `WA_OUTBOX_JWT_ROLES` | roles to capabilities: `admin=send,read,operate;member=send,read` | that example |
///
/// A role missing from the map grants nothing: the caller is known (its org is) but every route
/// answers 403.
public struct GatewayAuthConfiguration: Sendable, Equatable {
    public struct JWT: Sendable, Equatable {
        public var jwksURL: String
        public var issuer: String?
        public var audience: String?
        public var orgClaim: String
        public var roleClaim: String
        public var roles: [String: Set<Capability>]
        /// The shortest time between two JWKS fetches caused by tokens naming an unknown `kid`.
        public var refreshCooldown: Duration
        /// Keys are fetched again on the next request after this long, even if every `kid` is known
        /// (a key removed from the JWKS stops being accepted).
        public var maxKeyAge: Duration
        /// Tolerated clock difference with the frontend for `exp` and `nbf`.
        public var leeway: Duration

        public init(jwksURL: String, issuer: String? = nil, audience: String? = nil, orgClaim: String = "org", roleClaim: String = "role",
                    roles: [String: Set<Capability>] = GatewayAuthConfiguration.defaultRoles,
                    refreshCooldown: Duration = .seconds(30), maxKeyAge: Duration = .seconds(600), leeway: Duration = .seconds(30)) {
            self.jwksURL = jwksURL
            self.issuer = issuer
            self.audience = audience
            self.orgClaim = orgClaim
            self.roleClaim = roleClaim
            self.roles = roles
            self.refreshCooldown = refreshCooldown
            self.maxKeyAge = maxKeyAge
            self.leeway = leeway
        }
    }

    /// Login JWTs; nil: only API keys are accepted.
    public var jwt: JWT?

    public init(jwt: JWT? = nil) {
        self.jwt = jwt
    }

    public static let defaultRoles: [String: Set<Capability>] = ["admin": [.send, .read, .operate], "member": [.send, .read]]

    public struct Invalid: Error, Sendable, Equatable, CustomStringConvertible {
        public var description: String
        init(_ description: String) { self.description = description }
    }

    /// The configuration the `WA_OUTBOX_JWKS_URL` … `WA_OUTBOX_JWT_ROLES` variables describe (see
    /// the type's documentation). Throws on a malformed URL or role map, naming the variable.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) throws(Invalid) -> GatewayAuthConfiguration {
        func value(_ name: String) -> String? {
            guard let value = environment[name]?.trimmingCharacters(in: .whitespaces), !value.isEmpty else { return nil }
            return value
        }
        guard let url = value("WA_OUTBOX_JWKS_URL") else {
            for name in ["WA_OUTBOX_JWT_ISSUER", "WA_OUTBOX_JWT_AUDIENCE", "WA_OUTBOX_JWT_ORG_CLAIM", "WA_OUTBOX_JWT_ROLE_CLAIM", "WA_OUTBOX_JWT_ROLES"]
            where value(name) != nil {
                throw Invalid("\(name) is set but WA_OUTBOX_JWKS_URL is not: login JWTs need the frontend's JWKS URL")
            }
            return GatewayAuthConfiguration()
        }
        guard let parsed = URL(string: url), ["http", "https"].contains(parsed.scheme?.lowercased() ?? ""), parsed.host != nil else {
            throw Invalid("WA_OUTBOX_JWKS_URL must be an http or https URL, not '\(url)'")
        }
        let roles: [String: Set<Capability>]
        do throws(Invalid) {
            roles = try value("WA_OUTBOX_JWT_ROLES").map(parseRoles) ?? defaultRoles
        } catch {
            throw Invalid("WA_OUTBOX_JWT_ROLES: \(error.description)")
        }
        return GatewayAuthConfiguration(jwt: JWT(
            jwksURL: url, issuer: value("WA_OUTBOX_JWT_ISSUER"), audience: value("WA_OUTBOX_JWT_AUDIENCE"),
            orgClaim: value("WA_OUTBOX_JWT_ORG_CLAIM") ?? "org", roleClaim: value("WA_OUTBOX_JWT_ROLE_CLAIM") ?? "role", roles: roles))
    }

    /// `admin=send,read,operate;member=send,read` → a map. A role may map to nothing (`viewer=`).
    public static func parseRoles(_ text: String) throws(Invalid) -> [String: Set<Capability>] {
        var roles: [String: Set<Capability>] = [:]
        for entry in text.split(separator: ";") {
            let parts = entry.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let role = parts[0].trimmingCharacters(in: .whitespaces)
            guard parts.count == 2, !role.isEmpty else { throw Invalid("'\(entry)' is not role=capability,capability") }
            guard roles[role] == nil else { throw Invalid("role '\(role)' appears twice") }
            var capabilities: Set<Capability> = []
            for name in parts[1].split(separator: ",") {
                let name = name.trimmingCharacters(in: .whitespaces)
                guard let capability = Capability(rawValue: name) else {
                    throw Invalid("unknown capability '\(name)' for role '\(role)': use \(Capability.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                capabilities.insert(capability)
            }
            roles[role] = capabilities
        }
        return roles
    }
}
