import Foundation
import Hummingbird
import OutboxStore
import PostgresClient

/// `/console/jobs`: jobs newest first, filtered, paged by key (`before` = the last id shown; never
/// OFFSET, never a count of the table), with a selection form for replay and cancel.
struct JobsPage: Sendable {
    let console: Console
    static let pageSize = 50

    func register<Context: RequestContext>(on router: Router<Context>) {
        router.get("/console/jobs") { request, _ in
            try await console.page(request) { op in
                let query = Form(request.uri.query ?? "")
                let fields = JobFilterFields(query)
                let list = try await JobList.render(fields, before: query.text("before").flatMap { Int64($0) }, op: op, path: "/console/jobs",
                                                    database: console.database)
                return HTML.page("Jobs", current: "/console/jobs", operator: op, fields.form(action: "/console/jobs", op: op) + list)
            }
        }
    }
}

/// A page of jobs with checkboxes, and the replay or cancel form that takes the selection or the
/// whole filter to its dry run (`/console/actions/plan`).
enum JobList {
    static func render(_ fields: JobFilterFields, before: Int64?, op: ConsoleOperator, path: String, database: PostgresDatabase) async throws -> String {
        var filter = try fields.filter(for: op)
        filter.beforeID = before
        let jobs = try await JobQueries.list(filter, limit: JobsPage.pageSize, newestFirst: true, in: database)
        let rows = jobs.map { job in
            ["<input type=\"checkbox\" name=\"id\" value=\"\(job.id)\" aria-label=\"select job \(job.id)\">",
             "<a href=\"/console/jobs/\(job.id)\">\(job.id)</a>", h(job.org), h(job.session), h(job.chat), h(job.kind), HTML.badge(job.state),
             "\(job.attempts)/\(job.maxAttempts)", job.errorCode.map { "<code>\(h($0))</code>" } ?? "", HTML.time(job.createdAt)]
        }
        var pager = "<p class=\"pager\">"
        if before != nil { pager += "<a href=\"\(path)?\(fields.query())\">⇤ newest</a> " }
        if jobs.count == JobsPage.pageSize, let last = jobs.last {
            pager += "<a rel=\"next\" href=\"\(path)?\(fields.query([("before", String(last.id))]))\">older →</a>"
        }
        pager += "</p>"
        return """
            <form method="post" action="/console/actions/plan" id="selection">\(HTML.csrfField(op))\(fields.hiddenFields)
            \(HTML.table("\(jobs.count) jobs on this page, newest first" + (before.map { ", before id \($0)" } ?? ""),
                         ["✓", "id", "organization", "session", "chat", "kind", "state", "attempts", "error", "created"], rows, id: "jobs-table")
                .replacingOccurrences(of: "<th scope=\"col\">✓</th>", with: "<th scope=\"col\"><input type=\"checkbox\" id=\"select-all\" aria-label=\"select all on this page\"></th>"))
            \(pager)
            <fieldset><legend>Replay or cancel</legend>
            <label><input type="radio" name="scope" value="selection" checked> the selected jobs</label>
            <label><input type="radio" name="scope" value="filter"> every job of this filter</label>
            <label>action <select name="action"><option value="replay">replay (failed and canceled jobs)</option><option value="cancel">cancel (queued jobs)</option></select></label>
            <label>reason <input name="reason" required maxlength="500" placeholder="why (kept in the audit trail)"></label>
            <button type="submit">Dry run…</button>
            <p class="hint">The next page shows how many jobs the action takes; nothing changes until you confirm there.</p>
            </fieldset></form>
            """
    }
}
