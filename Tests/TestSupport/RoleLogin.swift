import Foundation
import PostgresClient

/// A login user that is a member of one of the outbox's roles (`wa_outbox_api`, `wa_outbox_worker`,
/// `wa_outbox_operator`, migrations/0014) and nothing else, as README *Database roles* makes them.
/// Roles are cluster-wide: each login has a name of its own, so tests never share one.
public struct RoleLogin: Sendable {
    public let user: String
    public let password: String
    public let role: String

    public init(user: String, password: String, role: String) {
        self.user = user
        self.password = password
        self.role = role
    }

    /// Makes the login on the server `databaseURL` names, which must have been migrated (the
    /// migration creates the roles).
    public static func make(_ role: String, on databaseURL: String, password: String? = nil) async throws -> RoleLogin {
        let suffix = UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(10).lowercased()
        let login = RoleLogin(user: "wa_test_\(role)_\(suffix)", password: password ?? "pw-\(UUID().uuidString)", role: "wa_outbox_\(role)")
        let admin = try await PostgresConnection.connect(PostgresConfiguration(databaseURL), logger: TestEnvironment.logger)
        // Identifiers from hex digits and a fixed role name; the password is a literal with its quotes doubled.
        try await admin.execute("""
            CREATE ROLE \(login.user) LOGIN PASSWORD '\(login.password.replacingOccurrences(of: "'", with: "''"))' IN ROLE \(login.role)
            """)
        await admin.close()
        return login
    }

    /// `url` (a postgres:// URL) with this login's user and password instead of its own.
    public func url(_ url: String) -> String {
        guard let scheme = url.range(of: "://"), let at = url[scheme.upperBound...].firstIndex(of: "@") else { return url }
        let password = self.password.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? self.password
        return String(url[..<scheme.upperBound]) + "\(user):\(password)" + String(url[at...])
    }
}
