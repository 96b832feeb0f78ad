import Foundation
import OutboxCore
import PostgresClient

/// An API key as listed: never its secret, which exists only in `APIKeys.Created.key`.
public struct APIKeyRecord: Sendable, Equatable, Codable {
    public var id: Int64
    public var org: String
    public var name: String
    /// The visible prefix, e.g. `wak_live_ab12cd34`.
    public var prefix: String
    public var permissions: [String]
    public var createdAt: Date
    public var lastUsedAt: Date?
    public var revokedAt: Date?

    public init(id: Int64, org: String, name: String, prefix: String, permissions: [String], createdAt: Date,
                lastUsedAt: Date? = nil, revokedAt: Date? = nil) {
        self.id = id
        self.org = org
        self.name = name
        self.prefix = prefix
        self.permissions = permissions
        self.createdAt = createdAt
        self.lastUsedAt = lastUsedAt
        self.revokedAt = revokedAt
    }
}

/// The gateway's API keys (`wa_outbox.api_keys`): create, list, revoke, verify.
public enum APIKeys {
    /// The permissions a key may carry: the gateway's capabilities (a test keeps them in step).
    public static let knownPermissions = ["send", "read", "operate"]

    /// A key just created: `key` is shown to its owner once and stored nowhere.
    public struct Created: Sendable {
        public var record: APIKeyRecord
        public var key: String
    }

    /// The key `token` names, if it is a live key whose secret matches: one lookup by prefix, then a
    /// constant-time comparison of digests. Marks the key used, at most once a minute.
    public static func verify(_ token: String, in database: PostgresDatabase) async throws -> APIKeyRecord? {
        guard let presented = APIKeyToken(parsing: token) else { return nil }
        let rows = try await database.query("""
            SELECT id, org, name, prefix, permissions, created_at, last_used_at, revoked_at, secret_hash,
                   last_used_at IS NULL OR last_used_at < now() - interval '1 minute'
            FROM wa_outbox.api_keys WHERE prefix = \(presented.prefix) AND revoked_at IS NULL
            """)
        guard let row = rows.first else { return nil }
        let stored = try row.decode(PostgresBytes.self, at: 8).bytes
        guard ConstantTime.equals(presented.hash, stored) else { return nil }
        let record = try self.record(row)
        if try row.decode(Bool.self, at: 9) {
            try await database.query("""
                UPDATE wa_outbox.api_keys SET last_used_at = now()
                WHERE id = \(record.id) AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
                """)
        }
        return record
    }

    /// Creates a key for `org` with `permissions` (a subset of `knownPermissions`).
    public static func create(org: String, name: String, permissions: [String], in database: PostgresDatabase) async throws(OutboxError) -> Created {
        guard !org.isEmpty else { throw OutboxError(.validationError, "org must not be empty") }
        guard !name.isEmpty else { throw OutboxError(.validationError, "name must not be empty") }
        let permissions = Array(Set(permissions)).sorted()
        guard !permissions.isEmpty else { throw OutboxError(.validationError, "a key needs at least one permission") }
        if let unknown = permissions.first(where: { !knownPermissions.contains($0) }) {
            throw OutboxError(.validationError, "unknown permission '\(unknown)': use \(knownPermissions.joined(separator: ", "))")
        }
        // 32 random bits of prefix: a collision is rare, and answered with another key.
        for _ in 0..<5 {
            let token = APIKeyToken.generate()
            do {
                var insert: PostgresQuery = """
                    INSERT INTO wa_outbox.api_keys (org, name, prefix, secret_hash, permissions)
                    VALUES (\(org), \(name), \(token.prefix), \(PostgresBytes(token.hash)), \(permissions))
                    ON CONFLICT (prefix) DO NOTHING RETURNING
                    """
                insert.append(" " + columns)
                let rows = try await database.query(insert)
                if let row = rows.first { return Created(record: try record(row), key: token.key) }
            } catch {
                throw OutboxError(.validationError, "cannot create the key: \(error)")
            }
        }
        throw OutboxError(.internalError, "no free key prefix after 5 tries")
    }

    /// The organization's keys, revoked ones included, oldest first.
    public static func list(org: String, in database: PostgresDatabase) async throws -> [APIKeyRecord] {
        var select = PostgresQuery("SELECT " + columns + " FROM wa_outbox.api_keys WHERE org = ")
        select.append("", org)
        select.append(" ORDER BY id")
        return try await database.query(select).map(record)
    }

    /// Revokes a key: API processes refuse it within `APIKeyCache`'s lifetime. Revoking a revoked key changes
    /// nothing; `org`, if given, must own the key.
    @discardableResult
    public static func revoke(id: Int64, org: String? = nil, in database: PostgresDatabase) async throws(OutboxError) -> APIKeyRecord {
        do {
            var update: PostgresQuery = """
                UPDATE wa_outbox.api_keys SET revoked_at = coalesce(revoked_at, now())
                WHERE id = \(id) AND (\(org)::text IS NULL OR org = \(org)) RETURNING
                """
            update.append(" " + columns)
            let rows = try await database.query(update)
            guard let row = rows.first else { throw OutboxError(.notFound, "no API key \(id)") }
            return try record(row)
        } catch let error as OutboxError {
            throw error
        } catch {
            throw OutboxError(.internalError, "cannot revoke key \(id): \(error)")
        }
    }

    static let columns = "id, org, name, prefix, permissions, created_at, last_used_at, revoked_at"

    static func record(_ row: PostgresRow) throws -> APIKeyRecord {
        APIKeyRecord(id: try row.decode(at: 0), org: try row.decode(at: 1), name: try row.decode(at: 2), prefix: try row.decode(at: 3),
                     permissions: try row.decode(at: 4), createdAt: try row.decode(at: 5), lastUsedAt: try row.decode(at: 6),
                     revokedAt: try row.decode(at: 7))
    }
}
