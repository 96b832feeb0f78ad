import Foundation
import PostgresClient

/// Someone logged in to the operator console.
public struct ConsoleOperator: Sendable, Equatable {
    /// The name written into the audit trail.
    public var name: String
    /// The organization an API key limits the operator to; nil for the admin token (all of them).
    public var org: String?
    /// The token every form of this login must carry.
    public var csrf: String

    public init(name: String, org: String?, csrf: String) {
        self.name = name
        self.org = org
        self.csrf = csrf
    }
}

/// Console logins (`wa_outbox.console_logins`, migrations/0015): kept in the database, so every
/// API and worker process serving the console knows them. The cookie holds 256 random bits; only
/// their SHA-256 is stored, as for API keys.
public enum ConsoleLogins {
    /// A new login for `name`; returns the cookie's token and the operator.
    public static func create(name: String, org: String?, apiKeyID: Int64?, lifetime: Duration,
                              in database: PostgresDatabase) async throws -> (token: String, operator: ConsoleOperator) {
        let token = randomHex(bytes: 32)
        let csrf = randomHex(bytes: 32)
        try await database.query("DELETE FROM wa_outbox.console_logins WHERE expires_at < now()")
        try await database.query("""
            INSERT INTO wa_outbox.console_logins (token_hash, operator, org, api_key_id, csrf, expires_at)
            VALUES (sha256(convert_to(\(token), 'UTF8')), \(name), \(org), \(apiKeyID), \(csrf),
                    now() + \(lifetime.components.seconds) * interval '1 second')
            """)
        return (token, ConsoleOperator(name: name, org: org, csrf: csrf))
    }

    /// The operator a cookie's token names, if the login is live (not expired, its key not revoked).
    public static func find(token: String, in database: PostgresDatabase) async throws -> ConsoleOperator? {
        guard token.count == 64, token.allSatisfy(\.isHexDigit) else { return nil }
        let rows = try await database.query("""
            SELECT c.operator, c.org, c.csrf FROM wa_outbox.console_logins c
            LEFT JOIN wa_outbox.api_keys k ON k.id = c.api_key_id
            WHERE c.token_hash = sha256(convert_to(\(token), 'UTF8')) AND c.expires_at > now()
              AND (c.api_key_id IS NULL OR k.revoked_at IS NULL)
            """)
        guard let row = rows.first else { return nil }
        return ConsoleOperator(name: try row.decode(at: 0), org: try row.decode(at: 1), csrf: try row.decode(at: 2))
    }

    public static func delete(token: String, in database: PostgresDatabase) async throws {
        try await database.query("DELETE FROM wa_outbox.console_logins WHERE token_hash = sha256(convert_to(\(token), 'UTF8'))")
    }

    static func randomHex(bytes: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<bytes).map { _ in String(format: "%02x", UInt8.random(in: .min ... .max, using: &generator)) }.joined()
    }
}
