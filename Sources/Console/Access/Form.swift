import Foundation
import HTTPSurface
import Hummingbird

/// An `application/x-www-form-urlencoded` body (or a query string): fields in order, repeatable
/// (the checkboxes of a selection).
struct Form: Sendable {
    var fields: [(name: String, value: String)]

    init(_ encoded: String) {
        fields = encoded.split(separator: "&").compactMap { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = Self.decode(parts[0]) else { return nil }
            return (name, parts.count > 1 ? Self.decode(parts[1]) ?? "" : "")
        }
    }

    static func decode(_ text: Substring) -> String? {
        String(text).replacingOccurrences(of: "+", with: " ").removingPercentEncoding
    }

    /// The body of a form post, up to 64 KiB.
    static func read(_ request: Request) async throws -> Form {
        let buffer = try await request.body.collect(upTo: 64 * 1024)
        return Form(String(buffer: buffer))
    }

    subscript(_ name: String) -> String? {
        fields.first { $0.name == name }?.value
    }

    /// A field's value with surrounding white space removed; nil when missing or empty.
    func text(_ name: String) -> String? {
        guard let value = self[name]?.trimmingCharacters(in: .whitespacesAndNewlines), !value.isEmpty else { return nil }
        return value
    }

    func all(_ name: String) -> [String] {
        fields.filter { $0.name == name }.map(\.value)
    }
}
