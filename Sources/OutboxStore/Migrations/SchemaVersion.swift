import PostgresClient

/// The schema this build expects: the number of the newest file in `migrations/`. A test keeps
/// the two in step.
public enum SchemaVersion {
    public static let current = 23

    /// The newest migration applied to the database, or 0.
    public static func applied(in database: PostgresDatabase) async throws -> Int {
        try await database.query("""
            SELECT coalesce(max(version), 0)::int8 FROM wa_outbox.schema_migrations
            """)[0].decode(Int.self, at: 0)
    }
}
