import Foundation
import HTTPSurface
import Hummingbird
import OutboxStore

/// `/console/stream`: `message.status` events as they happen, filtered by session, status and kind.
/// The page polls `/console/stream/events` every second with its cursor (`tx.id`): the event log's
/// own order (`EventLog.after`), so it misses no late commit and repeats nothing.
struct StreamPage: Sendable {
    let console: Console

    func register<Context: RequestContext>(on router: Router<Context>) {
        router.get("/console/stream") { request, _ in
            try await console.page(request) { op in
                let head = try await EventLog.head(in: console.database)
                return HTML.page("Live stream", current: "/console/stream", operator: op, """
                    <form class="filters" id="stream-filters">
                    <label>session<input name="session"></label><label>status<select name="status"><option value="">any</option>\
                    \(["queued", "retrying", "sent", "edited", "revoked", "delivered", "read", "undelivered", "failed", "canceled"].map { "<option>\($0)</option>" }.joined())</select></label>
                    <label>kind<select name="kind"><option value="">any</option><option>send</option><option>edit</option><option>revoke</option></select></label>
                    </form>
                    <p class="hint">Newest first; the filter applies to events from now on. Shown: <span id="stream-count">0</span>.</p>
                    \(HTML.table("message.status events as they are written", ["at", "organization", "session", "job", "kind", "status", "error"], [], id: "stream")
                        .replacingOccurrences(of: "<tr><td colspan=\"7\">none</td></tr>", with: "")
                        .replacingOccurrences(of: "<table id=\"stream\">", with: "<table id=\"stream\" data-cursor=\"\(head.tx).\(head.id)\">"))
                    """)
            }
        }
        router.get("/console/stream/events") { request, _ in
            guard let op = try await console.loggedIn(request) else { throw APIError.unauthorized("log in to the console first: /console/login") }
            let query = Form(request.uri.query ?? "")
            let parts = (query["cursor"] ?? "").split(separator: ".")
            guard parts.count == 2, let tx = Int64(parts[0]), let id = Int64(parts[1]) else {
                throw APIError.validation("cursor must be TX.ID, as the page gives it")
            }
            let read = try await EventLog.after(EventCursor(tx: tx, id: id), org: op.org, limit: 200, in: console.database)
            let session = query.text("session"), status = query.text("status"), kind = query.text("kind")
            let events = read.filter { event in
                event.isMessageStatus && (session == nil || event.session == session) && (status == nil || event.status == status)
                    && (kind == nil || event.kind == kind)
            }
            let next = read.last?.cursor ?? EventCursor(tx: tx, id: id)
            let encoder = JSONEncoder()
            var response = Response(status: .ok, body: .init(byteBuffer: ByteBuffer(bytes: try encoder.encode(StreamPageBody(cursor: "\(next.tx).\(next.id)", events: events)))))
            response.headers[.contentType] = "application/json"
            response.headers[.cacheControl] = "no-store"
            return response
        }
    }

    struct StreamPageBody: Encodable {
        var cursor: String
        var events: [StatusEvent]
    }
}
