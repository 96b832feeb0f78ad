/// An error from PostgreSQL or from talking to it.
///
/// Server errors carry the SQLSTATE, message, detail and hint as the server sent them, so callers
/// can branch on `sqlState` (for example `23505`, unique violation) instead of parsing text.
public struct PostgresError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// Could not connect, or the connection broke; the connection is unusable.
        case connection
        /// The server answered with an error; the connection remains usable.
        case server
        /// A value could not be encoded or decoded.
        case decoding
    }

    public var kind: Kind
    public var sqlState: String?
    public var message: String
    public var detail: String?
    public var hint: String?

    public init(kind: Kind, sqlState: String? = nil, message: String, detail: String? = nil, hint: String? = nil) {
        self.kind = kind
        self.sqlState = sqlState
        self.message = message
        self.detail = detail
        self.hint = hint
    }

    public var description: String {
        var text = "postgres \(kind)"
        if let sqlState { text += " \(sqlState)" }
        text += ": \(message)"
        if let detail { text += " (\(detail))" }
        return text
    }

    public static let uniqueViolation = "23505"

    static func decoding(_ message: String) -> PostgresError {
        PostgresError(kind: .decoding, message: message)
    }
}
