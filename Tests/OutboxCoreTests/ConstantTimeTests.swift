import OutboxCore
import Testing

@Suite("Secret comparison")
struct ConstantTimeTests {
    @Test func equalSecretsMatch() {
        #expect(ConstantTime.equals(Array("s3cret-operator-token".utf8), Array("s3cret-operator-token".utf8)))
        #expect(ConstantTime.equals([], []))
    }

    @Test func differentSecretsDoNotMatch() {
        #expect(!ConstantTime.equals(Array("s3cret-operator-token".utf8), Array("s3cret-operator-tokeN".utf8)))
        #expect(!ConstantTime.equals(Array("s3cret".utf8), Array("s3cret-operator-token".utf8)))
        #expect(!ConstantTime.equals([], [0]))
    }

    /// Lengths that differ by a multiple of 256, with the longer one's extra bytes zero (what the
    /// shorter one was padded with): the length difference must not vanish in a narrow fold.
    @Test func lengthsDifferingByMultiplesOf256DoNotMatch() {
        /// Whether `bytes` equals `bytes` followed by `extra` zero bytes, compared both ways.
        func matchesPadded(_ bytes: [UInt8], extra: Int) -> Bool {
            let padded = bytes + [UInt8](repeating: 0, count: extra)
            return ConstantTime.equals(bytes, padded) || ConstantTime.equals(padded, bytes)
        }
        let token = Array("s3cret-operator-token".utf8)
        for extra in [256, 512, 65_536] {
            #expect(!matchesPadded(token, extra: extra), "token and token + \(extra) zero bytes")
        }
        #expect(!matchesPadded([], extra: 256), "nothing and 256 zero bytes")
        #expect(!matchesPadded([7], extra: 256), "[7] and [7] + 256 zero bytes")
    }
}
