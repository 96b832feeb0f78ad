import AsyncHTTPClient
import HTTPSurface
import Foundation
import Hummingbird
import Logging
import OutboxCore
import OutboxStore
import PostgresClient

/// Sets `context.principal` from `Authorization: Bearer <token>`, as the seed describes: an API key
/// (a token shaped `wak_…`, looked up in the database) or else a login JWT (verified against the
/// frontend's JWKS), tried in turn.
///
/// - No `Authorization` header: the request goes on with no principal; routes answer 401 through
///   `context.require` (and a route that authenticates otherwise, such as an event stream with a
///   ticket, still can).
/// - A token that is present but invalid (unknown, revoked, expired, badly signed, another
///   scheme): 401 at once, saying why, with `WWW-Authenticate: Bearer error="invalid_token"`. A caller whose credential is wrong learns it, and no route
///   can mistake a bad credential for an anonymous request.
///
/// Tokens are never logged: only an API key's prefix or a JWT's subject, at debug level.
public struct Authenticator: RouterMiddleware {
    public typealias Context = GatewayContext

    /// Checks API keys; replaceable in tests. Returns nil for an unknown, revoked or wrong key.
    public typealias APIKeyLookup = @Sendable (String) async throws -> Principal?

    let apiKeys: APIKeyLookup
    let loginTokens: LoginTokens?
    let logger: Logger

    public init(apiKeys: @escaping APIKeyLookup, loginTokens: LoginTokens?, logger: Logger) {
        self.apiKeys = apiKeys
        self.loginTokens = loginTokens
        self.logger = logger
    }

    /// API keys from `database`, remembered in `keyCache` (a revoked key is refused within its
    /// lifetime); login JWTs if `configuration.jwt` is set, their JWKS fetched with `httpClient`.
    public init(configuration: GatewayAuthConfiguration, database: PostgresDatabase, keyCache: APIKeyCache = APIKeyCache(),
                httpClient: HTTPClient = .shared, logger: Logger) {
        let loginTokens = configuration.jwt.map { jwt in
            LoginTokens(configuration: jwt, keys: JWKSKeys(url: jwt.jwksURL, client: httpClient, refreshCooldown: jwt.refreshCooldown,
                                                           maxKeyAge: jwt.maxKeyAge, logger: logger))
        }
        self.init(apiKeys: { token in try await keyCache.principal(for: token) { try await Self.principal(apiKey: token, in: database) } },
                  loginTokens: loginTokens, logger: logger)
    }

    /// The principal of an API key stored in `database`, if the key is live and its secret right.
    public static func principal(apiKey token: String, in database: PostgresDatabase) async throws -> Principal? {
        guard let record = try await APIKeys.verify(token, in: database) else { return nil }
        return Principal(org: record.org, capabilities: Set(record.permissions.compactMap(Capability.init(rawValue:))), subject: "key:" + record.prefix)
    }

    public func handle(_ request: Request, context: GatewayContext, next: (Request, GatewayContext) async throws -> Response) async throws -> Response {
        guard let header = request.headers[.authorization] else { return try await next(request, context) }
        var context = context
        do {
            context.principal = try await principal(authorization: header)
        } catch let refusal as APIError {
            logger.debug("credentials refused", metadata: ["reason": "\(refusal.message)"])
            // RFC 6750: a refused bearer token is answered with its challenge.
            var response = try refusal.response(from: request, context: context)
            response.headers[.wwwAuthenticate] = "Bearer error=\"invalid_token\""
            return response
        }
        logger.debug("authenticated", metadata: ["subject": "\(context.principal?.subject ?? "")"])
        return try await next(request, context)
    }

    /// The caller an `Authorization` header value names, or a 401 saying why not.
    func principal(authorization header: String) async throws -> Principal {
        let parts = header.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else {
            throw Self.unauthorized("Authorization must be 'Bearer <api key or login token>'")
        }
        let token = parts[1].trimmingCharacters(in: .whitespaces)
        if APIKeyToken.looksLikeKey(token) {
            guard let principal = try await apiKeys(token) else { throw Self.unauthorized("unknown or revoked API key") }
            return principal
        }
        guard let loginTokens else { throw Self.unauthorized("not an API key, and login tokens are not accepted by this gateway") }
        do {
            return try await loginTokens.principal(from: token)
        } catch {
            throw Self.unauthorized(error.reason)
        }
    }

    static func unauthorized(_ message: String) -> APIError {
        APIError.unauthorized(message)
    }
}
