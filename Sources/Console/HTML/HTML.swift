import Foundation
import HTTPTypes
import Hummingbird
import OutboxStore

/// HTML built as strings: every value from the database or the request goes through `escape`
/// (`h`), so a chat id, an error message or a message body can never become markup.
enum HTML {
    static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for character in text {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(character)
            }
        }
        return out
    }

    /// A query-string component.
    static func query(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? ""
    }

    static let pages: [(path: String, title: String)] = [
        ("/console", "Overview"), ("/console/sessions", "Sessions"), ("/console/jobs", "Jobs"),
        ("/console/failures", "Failures"), ("/console/stream", "Live stream"),
    ]

    /// A whole page: the navigation, who is logged in (and the organization they are limited to),
    /// the logout form, then `body`.
    static func page(_ title: String, current: String, operator: ConsoleOperator?, _ body: String) -> String {
        var nav = ""
        if let op = `operator` {
            nav = "<nav aria-label=\"Console\"><ul>" + pages.map { page in
                "<li><a href=\"\(page.path)\"" + (page.path == current ? " aria-current=\"page\"" : "") + ">\(page.title)</a></li>"
            }.joined() + "</ul><div class=\"who\">" + h(op.name) + (op.org.map { " · organization <b>\(h($0))</b>" } ?? " · all organizations")
                + "<form method=\"post\" action=\"/console/logout\">\(csrfField(op))<button type=\"submit\">Log out</button></form></div></nav>"
        }
        return """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
            <title>\(h(title)) · wa-outbox console</title><link rel="stylesheet" href="/console/assets/console.css">
            <script src="/console/assets/console.js" defer></script></head>
            <body><header><a class="brand" href="/console">wa-outbox console</a>\(nav)</header>
            <main id="main"><h1>\(h(title))</h1>
            \(body)
            </main></body></html>
            """
    }

    static func csrfField(_ op: ConsoleOperator) -> String {
        "<input type=\"hidden\" name=\"csrf\" value=\"\(h(op.csrf))\">"
    }

    /// A table with a caption, its header row and rows of cells already escaped.
    static func table(_ caption: String, _ header: [String], _ rows: [[String]], id: String? = nil) -> String {
        let head = header.map { "<th scope=\"col\">\(h($0))</th>" }.joined()
        let body = rows.isEmpty ? "<tr><td colspan=\"\(header.count)\">none</td></tr>"
            : rows.map { "<tr>" + $0.map { "<td>\($0)</td>" }.joined() + "</tr>" }.joined()
        return "<div class=\"scroll\"><table\(id.map { " id=\"\(h($0))\"" } ?? "")><caption>\(h(caption))</caption><thead><tr>\(head)</tr></thead><tbody>\(body)</tbody></table></div>"
    }

    /// A state as a badge: the word itself, so it reads without colour.
    static func badge(_ state: String) -> String {
        "<span class=\"badge \(h(state))\">\(h(state))</span>"
    }

    static func time(_ date: Date?) -> String {
        guard let date else { return "—" }
        let text = iso8601(date)
        return "<time datetime=\"\(text)\">\(text)</time>"
    }

    /// `2026-11-28T07:00:00Z`, by hand: Foundation's formatters cost more than a page's query.
    static func iso8601(_ date: Date) -> String {
        var seconds = time_t(date.timeIntervalSince1970.rounded(.down))
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : String(value) }
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))Z"
    }

    static func age(_ seconds: Double) -> String {
        switch seconds {
        case ..<1: "0 s"
        case ..<120: "\(Int(seconds)) s"
        case ..<7200: "\(Int(seconds / 60)) min"
        case ..<172_800: String(format: "%.1f h", seconds / 3600)
        default: String(format: "%.1f days", seconds / 86_400)
        }
    }

    /// `1,234,567`.
    static func number(_ value: Int) -> String {
        let digits = String(value.magnitude)
        var out = value < 0 ? "-" : ""
        for (index, digit) in digits.enumerated() {
            if index > 0, (digits.count - index) % 3 == 0 { out += "," }
            out.append(digit)
        }
        return out
    }

    /// An HTML answer: never cached, never framed, no script but the console's own file.
    static func response(_ html: String, status: HTTPResponse.Status = .ok) -> Response {
        var response = Response(status: status, body: .init(byteBuffer: ByteBuffer(string: html)))
        response.headers[.contentType] = "text/html; charset=utf-8"
        secure(&response)
        return response
    }

    static func secure(_ response: inout Response) {
        response.headers[.cacheControl] = "no-store"
        response.headers[.contentSecurityPolicy] = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'"
        response.headers[.xContentTypeOptions] = "nosniff"
        response.headers[HTTPField.Name("Referrer-Policy")!] = "same-origin"
    }

    static func redirect(_ location: String) -> Response {
        var response = Response(status: .seeOther)
        response.headers[.location] = location
        secure(&response)
        return response
    }
}

/// `HTML.escape`, short: used in every template.
func h(_ text: String) -> String { HTML.escape(text) }
func h(_ value: Int) -> String { HTML.number(value) }
