/// An error talking to Redis.
public struct RedisError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// Could not connect, timed out, or the connection broke; the connection is unusable.
        case connection
        /// Redis answered with an error reply (for example `WRONGTYPE` or `NOSCRIPT`).
        case reply
        /// The configuration (URL) is invalid.
        case configuration
        /// The reply did not have the expected shape.
        case unexpectedReply
    }

    public var kind: Kind
    public var message: String

    public init(kind: Kind, message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { "redis \(kind): \(message)" }
}
