import Foundation
import HTTPSurface
import Hummingbird
import OutboxStore

/// `/console/jobs/{id}`: a job with its attempts and events, its receipts and its audit trail.
/// The message body only after an explicit click (a POST to `/console/jobs/{id}/body`), which
/// writes a `view_body` audit entry first.
struct JobPage: Sendable {
    let console: Console

    func register<Context: RequestContext>(on router: Router<Context>) {
        router.get("/console/jobs/:id") { request, context in
            let id = context.parameters.get("id", as: Int64.self)
            return try await console.page(request) { op in try await render(id, op: op, body: false) }
        }
        router.post("/console/jobs/:id/body") { request, context in
            let (op, _) = try await console.action(request)
            guard let id = context.parameters.get("id", as: Int64.self),
                  let detail = try await JobQueries.show(id, org: op.org, in: console.database) else { throw APIError.notFound("no such job") }
            try await ConsoleQueries.audit(actor: op.name, action: "view_body", jobID: id, session: detail.job.session, org: detail.job.org,
                                           reason: "opened in the console", in: console.database)
            return HTML.response(try await render(id, op: op, body: true))
        }
    }

    func render(_ id: Int64?, op: ConsoleOperator, body: Bool) async throws -> String {
        guard let id, let detail = try await JobQueries.show(id, org: op.org, includePayload: body, in: console.database) else {
            return HTML.page("No such job", current: "/console/jobs", operator: op, "<p class=\"error\">No job with this id here.</p>")
        }
        let job = detail.job
        let summary = [("state", HTML.badge(job.state)), ("organization", h(job.org)), ("session", h(job.session)), ("chat", h(job.chat)),
                       ("kind", h(job.kind)), ("WhatsApp message id", "<code>\(h(job.waMessageId))</code>"),
                       ("attempts", "\(job.attempts) of \(job.maxAttempts)"),
                       ("error", job.errorCode.map { "<code>\(h($0))</code> \(h(job.errorMessage ?? ""))" } ?? "—"),
                       ("created", HTML.time(job.createdAt)), ("finished", HTML.time(job.finishedAt))]
            .map { "<tr><th scope=\"row\">\($0.0)</th><td>\($0.1)</td></tr>" }.joined()
        let receiptStatuses: Set<String> = ["delivered", "read", "undelivered"]
        func eventRow(_ event: StatusEvent) -> [String] {
            [h(String(event.id)), HTML.time(Date(timeIntervalSince1970: event.timestamp)), HTML.badge(event.status), h(event.attempt),
             event.errorCode.map { "<code>\(h($0))</code>" } ?? "", h(event.errorMessage ?? "")]
        }
        let events = detail.events.filter { !receiptStatuses.contains($0.status) }.map(eventRow)
        let receipts = detail.events.filter { receiptStatuses.contains($0.status) }.map(eventRow)
        let audit = detail.audit.map { [HTML.time($0.at), h($0.actor), h($0.action), h($0.reason), "<code>\(h($0.details))</code>"] }
        let payload = body
            ? "<pre id=\"payload\">\(h(job.payload ?? ""))</pre><p class=\"hint\">This view was recorded in the audit trail.</p>"
            : "<form method=\"post\" action=\"/console/jobs/\(id)/body\">\(HTML.csrfField(op))<button type=\"submit\" id=\"show-body\">Show the message body (audited)</button></form>"
        let actions = """
            <form method="post" action="/console/actions/plan" class="inline">\(HTML.csrfField(op))
            <input type="hidden" name="id" value="\(id)"><input type="hidden" name="scope" value="selection">
            <select name="action" aria-label="action"><option value="replay">replay</option><option value="cancel">cancel</option></select>
            <input name="reason" required maxlength="500" placeholder="reason" aria-label="reason"><button type="submit">Dry run…</button></form>
            """
        return HTML.page("Job \(id)", current: "/console/jobs", operator: op, """
            <div class="scroll"><table id="job-summary"><tbody>\(summary)</tbody></table></div>
            <h2>Attempts and events</h2>\(HTML.table("Every event, one retrying per failed attempt", ["event", "at", "status", "attempt", "error", "message"], events, id: "events-table"))
            <h2>Receipts</h2>\(HTML.table("Delivery and read receipts", ["event", "at", "status", "attempt", "error", "message"], receipts, id: "receipts-table"))
            <h2>Audit trail</h2>\(HTML.table("Operators' actions on this job", ["at", "operator", "action", "reason", "details"], audit, id: "audit-table"))
            <h2>Message body</h2>\(payload)
            <h2>Replay or cancel</h2>\(actions)
            """)
    }
}
