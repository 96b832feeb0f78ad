/// A Redis reply (RESP2), copied out of hiredis' reply object.
public enum RedisValue: Sendable, Hashable {
    case status(String)
    case error(String)
    case integer(Int64)
    /// A bulk string: arbitrary bytes, possibly empty.
    case bulk([UInt8])
    /// The nil bulk string or nil array, distinct from an empty bulk string.
    case null
    case array([RedisValue])

    public var string: String? {
        switch self {
        case .bulk(let bytes): String(decoding: bytes, as: UTF8.self)
        case .status(let text): text
        case .integer(let value): String(value)
        default: nil
        }
    }

    public var int: Int64? {
        switch self {
        case .integer(let value): value
        case .bulk(let bytes): Int64(String(decoding: bytes, as: UTF8.self))
        default: nil
        }
    }

    public var array: [RedisValue]? {
        if case .array(let values) = self { return values }
        return nil
    }

    public var isNull: Bool { self == .null }
}

/// A value that can be sent as one argument of a command. Arguments are binary-safe.
public protocol RedisArgument: Sendable {
    var redisBytes: [UInt8] { get }
}

extension String: RedisArgument { public var redisBytes: [UInt8] { Array(utf8) } }
extension Substring: RedisArgument { public var redisBytes: [UInt8] { Array(utf8) } }
extension Int: RedisArgument { public var redisBytes: [UInt8] { Array(String(self).utf8) } }
extension Int64: RedisArgument { public var redisBytes: [UInt8] { Array(String(self).utf8) } }
extension Double: RedisArgument { public var redisBytes: [UInt8] { Array(String(self).utf8) } }
extension Array: RedisArgument where Element == UInt8 { public var redisBytes: [UInt8] { self } }

/// A command and its arguments.
public struct RedisCommand: Sendable {
    public var arguments: [[UInt8]]
    public init(_ name: String, _ arguments: [any RedisArgument] = []) {
        self.arguments = [Array(name.utf8)] + arguments.map(\.redisBytes)
    }
}
