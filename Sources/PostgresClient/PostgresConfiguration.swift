import Foundation
/// Where and how to connect: a `postgres://` URL or a libpq conninfo string, plus defaults.
///
/// The defaults add what a long-running worker needs and libpq leaves off: a connect timeout,
/// TCP keepalives and a TCP user timeout, so a half-open connection is noticed in seconds rather
/// than hours. Anything the URL sets itself wins over the defaults.
public struct PostgresConfiguration: Sendable, CustomStringConvertible {
    public var connectionString: String
    public var applicationName: String
    public var connectTimeoutSeconds: Int

    public init(_ connectionString: String, applicationName: String = "wa-outbox", connectTimeoutSeconds: Int = 5) {
        self.connectionString = connectionString
        self.applicationName = applicationName
        self.connectTimeoutSeconds = connectTimeoutSeconds
    }

    /// libpq keywords and values; `dbname` carries the user's string and is expanded by libpq,
    /// and since later entries override earlier ones, the user's settings override these defaults.
    var keywordValues: [(String, String)] {
        [
            ("application_name", applicationName),
            ("connect_timeout", String(connectTimeoutSeconds)),
            ("keepalives", "1"),
            ("keepalives_idle", "10"),
            ("keepalives_interval", "5"),
            ("keepalives_count", "3"),
            ("tcp_user_timeout", "30000"),
            ("options", "-c client_min_messages=warning"),
            ("dbname", connectionString),
        ]
    }

    /// The connection string with any password replaced, safe for logs.
    public var description: String { Self.redact(connectionString) }

    public static func redact(_ connectionString: String) -> String {
        var text = connectionString
        // URL form: scheme://user:password@host
        if let scheme = text.range(of: "://"), let at = text.range(of: "@", range: scheme.upperBound..<text.endIndex) {
            let userInfo = text[scheme.upperBound..<at.lowerBound]
            if let colon = userInfo.firstIndex(of: ":") {
                text.replaceSubrange(text.index(after: colon)..<at.lowerBound, with: "***")
            }
        }
        // conninfo or query form: password=secret
        if let range = text.range(of: "password=") {
            let end = text[range.upperBound...].firstIndex(where: { $0 == " " || $0 == "&" }) ?? text.endIndex
            text.replaceSubrange(range.upperBound..<end, with: "***")
        }
        return text
    }
}
