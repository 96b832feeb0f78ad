import Crypto
import Foundation

/// Short-lived, stateless tickets for the event stream, for browsers: `EventSource` cannot send an
/// Authorization header, so a page asks `POST /api/v1/events/tickets` (authenticated) for a ticket
/// and opens `GET /api/v1/events?ticket=…`.
///
/// A ticket is `base64url(claims).base64url(HMAC-SHA256(secret, claims))`, the claims being the
/// organization, the capabilities, the subject and the expiry: nothing is stored, any API process
/// holding the same secret accepts it. With more than one API process, set the same secret in each
/// (`WA_OUTBOX_TICKET_SECRET`, at least 32 characters); without it each process draws a random one,
/// and a ticket only works on the process that issued it. A ticket grants the event stream only.
public struct StreamTickets: Sendable {
    /// The environment variable holding the shared secret.
    public static let secretVariable = "WA_OUTBOX_TICKET_SECRET"

    public struct ConfigurationError: Error, CustomStringConvertible {
        public var description: String
    }

    private let key: SymmetricKey
    /// How long a ticket is valid.
    public let lifetime: Duration

    public init(secret: SymmetricKey, lifetime: Duration = .seconds(60)) {
        self.key = secret
        self.lifetime = lifetime
    }

    /// With `WA_OUTBOX_TICKET_SECRET` if it is set (an error if shorter than 32 characters), else a
    /// random secret of this process.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment,
                                       lifetime: Duration = .seconds(60)) throws -> StreamTickets {
        guard let secret = environment[secretVariable], !secret.isEmpty else {
            return StreamTickets(secret: SymmetricKey(size: .bits256), lifetime: lifetime)
        }
        guard secret.utf8.count >= 32 else {
            throw ConfigurationError(description: "\(secretVariable) must be at least 32 characters (for example: openssl rand -hex 32)")
        }
        return StreamTickets(secret: SymmetricKey(data: Data(secret.utf8)), lifetime: lifetime)
    }

    struct Claims: Codable {
        var org: String
        var capabilities: [Capability]
        var subject: String
        /// Unix seconds.
        var expires: Int64
    }

    /// A ticket for `principal`, valid for `lifetime` from `now`.
    public func issue(for principal: Principal, now: Date = Date()) -> String {
        let claims = Claims(org: principal.org, capabilities: principal.capabilities.sorted { $0.rawValue < $1.rawValue },
                            subject: principal.subject, expires: Int64(now.timeIntervalSince1970) + lifetime.components.seconds)
        // Encoding a struct of strings and integers cannot fail.
        let payload = (try? JSONEncoder().encode(claims)) ?? Data()
        let signature = HMAC<SHA256>.authenticationCode(for: payload, using: key)
        return Self.base64URL(payload) + "." + Self.base64URL(Data(signature))
    }

    /// The ticket's caller, if the ticket is intact and not expired at `now`.
    public func verify(_ ticket: String, now: Date = Date()) -> Principal? {
        let parts = ticket.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, let payload = Self.data(base64URL: parts[0]), let signature = Self.data(base64URL: parts[1]),
              HMAC<SHA256>.isValidAuthenticationCode(signature, authenticating: payload, using: key),
              let claims = try? JSONDecoder().decode(Claims.self, from: payload),
              Int64(now.timeIntervalSince1970) < claims.expires
        else { return nil }
        return Principal(org: claims.org, capabilities: Set(claims.capabilities), subject: claims.subject)
    }

    static func base64URL(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func data(base64URL text: Substring) -> Data? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        return Data(base64Encoded: base64)
    }
}
