import Crypto

/// The shape of a gateway API key: `wak_live_<8 hex>_<64 hex>`.
///
/// The first 17 characters (`wak_live_ab12cd34`) are the visible prefix: stored in clear, unique,
/// how a key is found, listed and named in logs. The 64 hex digits after the separator are 256 bits
/// from the system's CSPRNG. Only the SHA-256 of the whole key is stored. A fast hash is right here,
/// unlike for passwords: nobody can guess 256 random bits however fast each guess is, and a slow
/// hash (bcrypt, ~100 ms of CPU) on every API request would cost throughput and invite denial of
/// service.
public struct APIKeyToken: Sendable, Equatable {
    public static let scheme = "wak_live_"
    static let prefixDigits = 8
    static let secretDigits = 64

    /// `wak_live_ab12cd34`.
    public var prefix: String
    /// The whole key, as the caller presents it.
    public var key: String

    /// A new random key.
    public static func generate() -> APIKeyToken {
        var random = SystemRandomNumberGenerator()
        let prefix = scheme + hex((0..<prefixDigits / 2).map { _ in UInt8.random(in: .min ... .max, using: &random) })
        let secret = hex((0..<secretDigits / 2).map { _ in UInt8.random(in: .min ... .max, using: &random) })
        return APIKeyToken(prefix: prefix, key: prefix + "_" + secret)
    }

    /// Whether a bearer token has a key's shape (`wak_` and the rest); anything else is no API key
    /// (a JWT, say).
    public static func looksLikeKey(_ token: String) -> Bool {
        token.hasPrefix("wak_")
    }

    /// The key, if `token` has exactly a key's shape.
    public init?(parsing token: String) {
        let bytes = Array(token.utf8)
        let prefixLength = Self.scheme.utf8.count + Self.prefixDigits
        guard token.hasPrefix(Self.scheme), bytes.count == prefixLength + 1 + Self.secretDigits, bytes[prefixLength] == UInt8(ascii: "_"),
              bytes[Self.scheme.utf8.count...].enumerated().allSatisfy({ $0.offset == Self.prefixDigits || Self.isHexDigit($0.element) })
        else { return nil }
        self.init(prefix: String(decoding: bytes[..<prefixLength], as: UTF8.self), key: token)
    }

    init(prefix: String, key: String) {
        self.prefix = prefix
        self.key = key
    }

    /// SHA-256 of the whole key: what the database keeps.
    public var hash: [UInt8] { Self.hash(of: key) }

    /// SHA-256 of a presented token, whatever its shape.
    public static func hash(of token: String) -> [UInt8] { Array(SHA256.hash(data: Array(token.utf8))) }

    static func isHexDigit(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte)
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
