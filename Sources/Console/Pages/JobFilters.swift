import Foundation
import HTTPSurface
import OutboxCore
import OutboxStore

/// The jobs filter of the jobs and failures pages and of the actions: the fields of a query string
/// or a form (`state`, `org`, `session`, `chat`, `kind`, `error_code`, `created_after`,
/// `created_before`), kept as text so links and confirmation forms can repeat them.
struct JobFilterFields: Sendable {
    static let names = ["state", "org", "session", "chat", "kind", "error_code", "created_after", "created_before"]
    var values: [String: String] = [:]

    init(_ form: Form) {
        for name in Self.names { if let value = form.text(name) { values[name] = value } }
    }

    var isEmpty: Bool { values.isEmpty }

    /// The filter, narrowed to the operator's organization; a bad value is a validation error.
    func filter(for op: ConsoleOperator) throws -> JobFilter {
        var filter = JobFilter()
        if let state = values["state"] {
            guard let parsed = JobState(rawValue: state) else { throw APIError.validation("unknown state \(state)") }
            filter.states = [parsed]
        }
        if let kind = values["kind"] {
            guard let parsed = JobKind(rawValue: kind) else { throw APIError.validation("unknown kind \(kind): send, edit or revoke") }
            filter.kind = parsed
        }
        filter.org = values["org"]
        filter.session = values["session"]
        filter.chat = values["chat"]
        filter.errorCode = values["error_code"]
        filter.createdAfter = try values["created_after"].map { try Self.date($0, "created_after") }
        filter.createdBefore = try values["created_before"].map { try Self.date($0, "created_before") }
        return op.scoped(filter)
    }

    /// `2026-11-28T07:00` (a `datetime-local` field, read as UTC), with seconds, or full ISO 8601.
    static func date(_ text: String, _ field: String) throws -> Date {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        for format in ["yyyy-MM-dd'T'HH:mm", "yyyy-MM-dd'T'HH:mm:ss", "yyyy-MM-dd"] {
            formatter.dateFormat = format
            if let date = formatter.date(from: text) { return date }
        }
        if let date = try? Date(text, strategy: .iso8601) { return date }
        throw APIError.validation("\(field) must be a time such as 2026-11-28T07:00 (UTC)")
    }

    /// The filter as a query string (for links), with `extra` fields after it.
    func query(_ extra: [(String, String)] = []) -> String {
        (Self.names.compactMap { name in values[name].map { (name, $0) } } + extra)
            .map { "\($0.0)=\(HTML.query($0.1))" }.joined(separator: "&")
    }

    /// The filter as hidden fields of a form.
    var hiddenFields: String {
        Self.names.compactMap { name in values[name].map { "<input type=\"hidden\" name=\"\(name)\" value=\"\(h($0))\">" } }.joined()
    }

    /// The filter form of a page: `fixed` fields are not offered (the failures page fixes the state).
    func form(action: String, op: ConsoleOperator, fixed: Set<String> = []) -> String {
        func input(_ name: String, _ label: String, type: String = "text") -> String {
            guard !fixed.contains(name) else { return values[name].map { "<input type=\"hidden\" name=\"\(name)\" value=\"\(h($0))\">" } ?? "" }
            return "<label>\(label)<input name=\"\(name)\" type=\"\(type)\" value=\"\(h(values[name] ?? ""))\"></label>"
        }
        func select(_ name: String, _ label: String, _ options: [String]) -> String {
            guard !fixed.contains(name) else { return values[name].map { "<input type=\"hidden\" name=\"\(name)\" value=\"\(h($0))\">" } ?? "" }
            return "<label>\(label)<select name=\"\(name)\"><option value=\"\">any</option>" + options.map { option in
                "<option\(values[name] == option ? " selected" : "")>\(option)</option>"
            }.joined() + "</select></label>"
        }
        return "<form class=\"filters\" method=\"get\" action=\"\(action)\" role=\"search\">"
            + select("state", "state", JobState.allCases.map(\.rawValue))
            + (op.org == nil ? input("org", "organization") : "")
            + input("session", "session") + input("chat", "chat")
            + select("kind", "kind", ["send", "edit", "revoke"]) + input("error_code", "error code")
            + input("created_after", "created from (UTC)", type: "datetime-local") + input("created_before", "created before (UTC)", type: "datetime-local")
            + "<button type=\"submit\">Filter</button></form>"
    }
}
