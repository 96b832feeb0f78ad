/// A `numeric` value, exchanged as its exact decimal text so no precision is lost.
public struct PostgresNumeric: PostgresCodable, Hashable, CustomStringConvertible {
    public var text: String
    public init(_ text: String) { self.text = text }
    public var description: String { text }

    /// Sent in text format: the server parses it, exactly as it would a literal.
    public var postgresBind: PostgresBind { PostgresBind(type: .numeric, format: 0, bytes: Array(text.utf8)) }

    /// Decodes the binary form: int16 ndigits, int16 weight, uint16 sign, uint16 dscale, then
    /// ndigits base-10000 digits; the first digit is worth 10000^weight.
    public static func decode(_ bytes: UnsafeRawBufferPointer, type: PostgresType) throws -> PostgresNumeric {
        guard type == .numeric else {
            throw PostgresError.decoding("cannot decode column of type oid \(type.rawValue) as numeric")
        }
        guard bytes.count >= 8 else { throw PostgresError.decoding("numeric header too short") }
        let ndigits = Int(bytes.readBigEndian(Int16.self, at: 0))
        let weight = Int(bytes.readBigEndian(Int16.self, at: 2))
        let sign = bytes.readBigEndian(UInt16.self, at: 4)
        let dscale = Int(bytes.readBigEndian(UInt16.self, at: 6))
        switch sign {
        case 0xC000: return PostgresNumeric("NaN")
        case 0xD000: return PostgresNumeric("Infinity")
        case 0xF000: return PostgresNumeric("-Infinity")
        case 0x0000, 0x4000: break
        default: throw PostgresError.decoding("invalid numeric sign \(sign)")
        }
        guard bytes.count == 8 + 2 * ndigits else { throw PostgresError.decoding("numeric length mismatch") }
        let digits = (0..<ndigits).map { Int(bytes.readBigEndian(Int16.self, at: 8 + 2 * $0)) }
        func digit(_ index: Int) -> Int { index >= 0 && index < digits.count ? digits[index] : 0 }

        var integer = ""
        if weight < 0 {
            integer = "0"
        } else {
            for index in 0...weight {
                let group = digit(index)
                integer += index == 0 ? String(group) : pad4(group)
            }
        }
        var text = (sign == 0x4000 ? "-" : "") + integer
        if dscale > 0 {
            var fraction = ""
            var index = weight + 1
            while fraction.count < dscale {
                fraction += pad4(digit(index))
                index += 1
            }
            text += "." + fraction.prefix(dscale)
        }
        return PostgresNumeric(text)
    }
}

private func pad4(_ value: Int) -> String {
    let text = String(value)
    return String(repeating: "0", count: 4 - text.count) + text
}
