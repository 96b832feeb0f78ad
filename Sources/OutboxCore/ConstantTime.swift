import Crypto

/// Secret comparison.
public enum ConstantTime {
    /// Whether two secrets are equal, in time that reveals neither how much of them matched nor
    /// their lengths: compares their SHA-256 digests with swift-crypto's constant-time comparison.
    /// (Equal digests mean equal inputs but for a SHA-256 collision.)
    public static func equals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        SHA256.hash(data: a) == SHA256.hash(data: b)
    }
}
