import Foundation

/// A PostgreSQL type OID, for the types this client encodes and decodes.
public struct PostgresType: RawRepresentable, Hashable, Sendable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let unknown = PostgresType(rawValue: 0)
    public static let bool = PostgresType(rawValue: 16)
    public static let bytea = PostgresType(rawValue: 17)
    public static let name = PostgresType(rawValue: 19)
    public static let int8 = PostgresType(rawValue: 20)
    public static let int2 = PostgresType(rawValue: 21)
    public static let int4 = PostgresType(rawValue: 23)
    public static let text = PostgresType(rawValue: 25)
    public static let oid = PostgresType(rawValue: 26)
    public static let json = PostgresType(rawValue: 114)
    public static let float4 = PostgresType(rawValue: 700)
    public static let float8 = PostgresType(rawValue: 701)
    public static let int4Array = PostgresType(rawValue: 1007)
    public static let textArray = PostgresType(rawValue: 1009)
    public static let varcharArray = PostgresType(rawValue: 1015)
    public static let int8Array = PostgresType(rawValue: 1016)
    public static let bpchar = PostgresType(rawValue: 1042)
    public static let varchar = PostgresType(rawValue: 1043)
    public static let timestamp = PostgresType(rawValue: 1114)
    public static let timestamptz = PostgresType(rawValue: 1184)
    public static let numeric = PostgresType(rawValue: 1700)
    public static let uuid = PostgresType(rawValue: 2950)
    public static let jsonb = PostgresType(rawValue: 3802)

    var isText: Bool { self == .text || self == .varchar || self == .name || self == .bpchar || self == .unknown }
}

/// One bound parameter: its type, wire format and bytes (nil is SQL NULL).
public struct PostgresBind: Sendable {
    public var type: PostgresType
    /// 0 for text, 1 for binary.
    public var format: Int32
    public var bytes: [UInt8]?
}

/// A Swift value that can be sent as a query parameter.
public protocol PostgresEncodable: Sendable {
    var postgresBind: PostgresBind { get }
}

/// A Swift value that can be read from a result column.
///
/// `bytes` is the column's binary wire form; it is only valid during the call.
public protocol PostgresDecodable {
    static func decode(_ bytes: UnsafeRawBufferPointer, type: PostgresType) throws -> Self
}

public typealias PostgresCodable = PostgresEncodable & PostgresDecodable

// MARK: - Binary helpers

extension UnsafeRawBufferPointer {
    @inline(__always)
    func readBigEndian<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        var value: T = 0
        withUnsafeMutableBytes(of: &value) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: self[offset..<offset + MemoryLayout<T>.size])) }
        return T(bigEndian: value)
    }
}

extension Array where Element == UInt8 {
    @inline(__always)
    mutating func appendBigEndian<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.bigEndian) { append(contentsOf: $0) }
    }
}

private func expect(_ type: PostgresType, in allowed: [PostgresType], for swiftType: Any.Type) throws {
    guard allowed.contains(type) else {
        throw PostgresError.decoding("cannot decode column of type oid \(type.rawValue) as \(swiftType)")
    }
}

private func expectLength(_ bytes: UnsafeRawBufferPointer, _ length: Int, for swiftType: Any.Type) throws {
    guard bytes.count == length else {
        throw PostgresError.decoding("\(swiftType) expects \(length) bytes, got \(bytes.count)")
    }
}

// MARK: - Scalars

extension String: PostgresCodable {
    public var postgresBind: PostgresBind { PostgresBind(type: .text, format: 1, bytes: Array(utf8)) }
    public static func decode(_ bytes: UnsafeRawBufferPointer, type: PostgresType) throws -> String {
        switch type {
        case .jsonb:
            guard bytes.first == 1 else { throw PostgresError.decoding("unsupported jsonb version") }
            return String(decoding: bytes.dropFirst(), as: UTF8.self)
        case .numeric:
            return try PostgresNumeric.decode(bytes, type: type).text
        case .uuid:
            return try UUID.decode(bytes, type: type).uuidString.lowercased()
        default:
            guard type.isText || type == .json else {
                throw PostgresError.decoding("cannot decode column of type oid \(type.rawValue) as String")
            }
            return String(decoding: bytes, as: UTF8.self)
        }
    }
}

extension Bool: PostgresCodable {
    public var postgresBind: PostgresBind { PostgresBind(type: .bool, format: 1, bytes: [self ? 1 : 0]) }
    public static func decode(_ bytes: UnsafeRawBufferPointer, type: PostgresType) throws -> Bool {
        try expect(type, in: [.bool], for: Bool.self)
        try expectLength(bytes, 1, for: Bool.self)
        return bytes[0] != 0
    }
}

/// Integers decode from any integer column that fits; a value that does not fit is an error, not a wrap.
protocol PostgresInteger: FixedWidthInteger, PostgresCodable {
    static var postgresType: PostgresType { get }
}

extension PostgresInteger {
    public var postgresBind: PostgresBind {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(MemoryLayout<Self>.size)
        bytes.appendBigEndian(self)
        return PostgresBind(type: Self.postgresType, format: 1, bytes: bytes)
    }

    public static func decode(_ bytes: UnsafeRawBufferPointer, type: PostgresType) throws -> Self {
        let wide: Int64
        switch (type, bytes.count) {
        case (.int2, 2): wide = Int64(bytes.readBigEndian(Int16.self, at: 0))
        case (.int4, 4): wide = Int64(bytes.readBigEndian(Int32.self, at: 0))
        case (.oid, 4): wide = Int64(bytes.readBigEndian(UInt32.self, at: 0))
        case (.int8, 8): wide = bytes.readBigEndian(Int64.self, at: 0)
        default: throw PostgresError.decoding("cannot decode column of type oid \(type.rawValue) as \(Self.self)")
        }
        guard let value = Self(exactly: wide) else {
            throw PostgresError.decoding("value \(wide) does not fit in \(Self.self)")
        }
        return value
    }
}

extension Int16: PostgresInteger { static var postgresType: PostgresType { .int2 } }
extension Int32: PostgresInteger { static var postgresType: PostgresType { .int4 } }
extension Int64: PostgresInteger { static var postgresType: PostgresType { .int8 } }
extension Int: PostgresInteger { static var postgresType: PostgresType { .int8 } }

extension Double: PostgresCodable {
    public var postgresBind: PostgresBind {
        var bytes: [UInt8] = []
        bytes.appendBigEndian(bitPattern)
        return PostgresBind(type: .float8, format: 1, bytes: bytes)
    }
    public static func decode(_ bytes: UnsafeRawBufferPointer, type: PostgresType) throws -> Double {
        switch (type, bytes.count) {
        case (.float8, 8): return Double(bitPattern: bytes.readBigEndian(UInt64.self, at: 0))
        case (.float4, 4): return Double(Float(bitPattern: bytes.readBigEndian(UInt32.self, at: 0)))
        case (.numeric, _):
            let text = try PostgresNumeric.decode(bytes, type: type).text
            guard let value = Double(text) else { throw PostgresError.decoding("numeric \(text) is not a Double") }
            return value
        default:
            if let value = try? Int64.decode(bytes, type: type) { return Double(value) }
            throw PostgresError.decoding("cannot decode column of type oid \(type.rawValue) as Double")
        }
    }
}

/// Microseconds between 1970-01-01 and PostgreSQL's epoch, 2000-01-01 (both UTC).
private let postgresEpochOffset: Int64 = 946_684_800_000_000

extension Date: PostgresCodable {
    public var postgresBind: PostgresBind {
        let micros = Int64((timeIntervalSince1970 * 1_000_000).rounded()) - postgresEpochOffset
        var bytes: [UInt8] = []
        bytes.appendBigEndian(micros)
        return PostgresBind(type: .timestamptz, format: 1, bytes: bytes)
    }
    public static func decode(_ bytes: UnsafeRawBufferPointer, type: PostgresType) throws -> Date {
        try expect(type, in: [.timestamptz, .timestamp], for: Date.self)
        try expectLength(bytes, 8, for: Date.self)
        let micros = bytes.readBigEndian(Int64.self, at: 0)
        if micros == .max { return .distantFuture }
        if micros == .min { return .distantPast }
        return Date(timeIntervalSince1970: Double(micros + postgresEpochOffset) / 1_000_000)
    }
}

extension UUID: PostgresCodable {
    public var postgresBind: PostgresBind {
        PostgresBind(type: .uuid, format: 1, bytes: withUnsafeBytes(of: uuid) { Array($0) })
    }
    public static func decode(_ bytes: UnsafeRawBufferPointer, type: PostgresType) throws -> UUID {
        try expect(type, in: [.uuid], for: UUID.self)
        try expectLength(bytes, 16, for: UUID.self)
        var raw: uuid_t = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &raw) { $0.copyMemory(from: bytes) }
        return UUID(uuid: raw)
    }
}

/// Binary data (`bytea`).
public struct PostgresBytes: PostgresCodable, Hashable {
    public var bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public var postgresBind: PostgresBind { PostgresBind(type: .bytea, format: 1, bytes: bytes) }
    public static func decode(_ bytes: UnsafeRawBufferPointer, type: PostgresType) throws -> PostgresBytes {
        try expect(type, in: [.bytea], for: PostgresBytes.self)
        return PostgresBytes(Array(bytes))
    }
}

/// A `jsonb` value, kept as its JSON text.
public struct PostgresJSONB: PostgresCodable, Hashable {
    public var text: String
    public init(_ text: String) { self.text = text }
    public init<T: Encodable>(encoding value: T) throws {
        self.text = String(decoding: try JSONEncoder().encode(value), as: UTF8.self)
    }
    public func decode<T: Decodable>(_: T.Type) throws -> T {
        try JSONDecoder().decode(T.self, from: Data(text.utf8))
    }
    public var postgresBind: PostgresBind { PostgresBind(type: .jsonb, format: 1, bytes: [1] + Array(text.utf8)) }
    public static func decode(_ bytes: UnsafeRawBufferPointer, type: PostgresType) throws -> PostgresJSONB {
        try expect(type, in: [.jsonb, .json], for: PostgresJSONB.self)
        return PostgresJSONB(try String.decode(bytes, type: type))
    }
}

// MARK: - Optional

extension Optional: PostgresEncodable where Wrapped: PostgresEncodable {
    public var postgresBind: PostgresBind {
        switch self {
        case .some(let value): return value.postgresBind
        case .none:
            // NULL still needs a type so the server can infer the parameter.
            var bind = (Wrapped.self as? any PostgresNullTyped.Type)?.nullBind ?? PostgresBind(type: .unknown, format: 0, bytes: nil)
            bind.bytes = nil
            return bind
        }
    }
}

/// Lets `nil` of a concrete type carry that type's OID.
protocol PostgresNullTyped { static var nullBind: PostgresBind { get } }
extension String: PostgresNullTyped { static var nullBind: PostgresBind { "".postgresBind } }
extension Int: PostgresNullTyped { static var nullBind: PostgresBind { 0.postgresBind } }
extension Int64: PostgresNullTyped { static var nullBind: PostgresBind { Int64(0).postgresBind } }
extension Int32: PostgresNullTyped { static var nullBind: PostgresBind { Int32(0).postgresBind } }
extension Int16: PostgresNullTyped { static var nullBind: PostgresBind { Int16(0).postgresBind } }
extension Bool: PostgresNullTyped { static var nullBind: PostgresBind { false.postgresBind } }
extension Double: PostgresNullTyped { static var nullBind: PostgresBind { 0.0.postgresBind } }
extension Date: PostgresNullTyped { static var nullBind: PostgresBind { Date(timeIntervalSince1970: 0).postgresBind } }
extension UUID: PostgresNullTyped { static var nullBind: PostgresBind { UUID().postgresBind } }
extension PostgresBytes: PostgresNullTyped { static var nullBind: PostgresBind { PostgresBytes([]).postgresBind } }
extension PostgresJSONB: PostgresNullTyped { static var nullBind: PostgresBind { PostgresJSONB("null").postgresBind } }
extension PostgresNumeric: PostgresNullTyped { static var nullBind: PostgresBind { PostgresNumeric("0").postgresBind } }

// MARK: - Arrays (one dimension)

/// An element type of a one-dimensional array parameter or column.
public protocol PostgresArrayElement: PostgresCodable {
    static var arrayType: PostgresType { get }
    static var elementType: PostgresType { get }
}

extension String: PostgresArrayElement {
    public static var arrayType: PostgresType { .textArray }
    public static var elementType: PostgresType { .text }
}

extension Int64: PostgresArrayElement {
    public static var arrayType: PostgresType { .int8Array }
    public static var elementType: PostgresType { .int8 }
}

extension Array: PostgresEncodable where Element: PostgresEncodable {
    public var postgresBind: PostgresBind {
        let (arrayType, elementType) = Self.arrayTypes
        var bytes: [UInt8] = []
        bytes.appendBigEndian(Int32(1))  // dimensions
        bytes.appendBigEndian(Int32(contains { $0.postgresBind.bytes == nil } ? 1 : 0))
        bytes.appendBigEndian(elementType.rawValue)
        bytes.appendBigEndian(Int32(count))
        bytes.appendBigEndian(Int32(1))  // lower bound
        for element in self {
            if let elementBytes = element.postgresBind.bytes {
                bytes.appendBigEndian(Int32(elementBytes.count))
                bytes.append(contentsOf: elementBytes)
            } else {
                bytes.appendBigEndian(Int32(-1))
            }
        }
        return PostgresBind(type: arrayType, format: 1, bytes: bytes)
    }

    private static var arrayTypes: (PostgresType, PostgresType) {
        if let element = Element.self as? any PostgresArrayElement.Type { return (element.arrayType, element.elementType) }
        if let wrapped = Element.self as? any OptionalArrayElement.Type { return wrapped.arrayTypes }
        preconditionFailure("\(Element.self) has no PostgreSQL array type")
    }
}

protocol OptionalArrayElement { static var arrayTypes: (PostgresType, PostgresType) { get } }
extension Optional: OptionalArrayElement where Wrapped: PostgresArrayElement {
    static var arrayTypes: (PostgresType, PostgresType) { (Wrapped.arrayType, Wrapped.elementType) }
}

extension Array: PostgresDecodable where Element: PostgresDecodable {
    public static func decode(_ bytes: UnsafeRawBufferPointer, type: PostgresType) throws -> [Element] {
        try expect(type, in: [.textArray, .varcharArray, .int8Array, .int4Array], for: [Element].self)
        guard bytes.count >= 12 else { throw PostgresError.decoding("array header too short") }
        let dimensions = bytes.readBigEndian(Int32.self, at: 0)
        let elementType = PostgresType(rawValue: bytes.readBigEndian(UInt32.self, at: 8))
        if dimensions == 0 { return [] }
        guard dimensions == 1, bytes.count >= 20 else {
            throw PostgresError.decoding("only one-dimensional arrays are supported")
        }
        let count = Int(bytes.readBigEndian(Int32.self, at: 12))
        var offset = 20
        var result: [Element] = []
        result.reserveCapacity(count)
        for _ in 0..<count {
            guard offset + 4 <= bytes.count else { throw PostgresError.decoding("array truncated") }
            let length = Int(bytes.readBigEndian(Int32.self, at: offset))
            offset += 4
            if length < 0 {
                guard let nullable = Element.self as? any PostgresNullDecodable.Type, let null = nullable.null as? Element else {
                    throw PostgresError.decoding("array holds NULL; decode as an array of optionals")
                }
                result.append(null)
                continue
            }
            guard offset + length <= bytes.count else { throw PostgresError.decoding("array truncated") }
            result.append(try Element.decode(UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + length]), type: elementType))
            offset += length
        }
        return result
    }
}

/// Optional columns decode NULL as nil; see `PostgresRow.decode`.
protocol PostgresNullDecodable { static var null: Self { get } }
extension Optional: PostgresNullDecodable { static var null: Optional<Wrapped> { nil } }

extension Optional: PostgresDecodable where Wrapped: PostgresDecodable {
    public static func decode(_ bytes: UnsafeRawBufferPointer, type: PostgresType) throws -> Wrapped? {
        try Wrapped.decode(bytes, type: type)
    }
}
