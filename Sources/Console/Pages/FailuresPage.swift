import Foundation
import Hummingbird
import OutboxStore

/// `/console/failures`: failed jobs grouped by error code and session (largest groups first); a
/// group's jobs below, with the replay and cancel form (dry run first, then confirm).
struct FailuresPage: Sendable {
    let console: Console

    func register<Context: RequestContext>(on router: Router<Context>) {
        router.get("/console/failures") { request, _ in
            try await console.page(request) { op in
                let query = Form(request.uri.query ?? "")
                var fields = JobFilterFields(query)
                fields.values["state"] = "failed"
                let groups = try await ConsoleQueries.failureGroups(org: op.org, in: console.database)
                let rows = groups.map { group in
                    // The organization too: the index on failures leads with it, so the group's list is one range scan.
                    let link = JobFilterFields.link(["state": "failed", "org": group.org, "error_code": group.errorCode, "session": group.session])
                    return [h(group.org), "<code>\(h(group.errorCode))</code>", h(group.session), h(group.count),
                            "<a href=\"/console/jobs/\(group.latestJob)\">\(group.latestJob)</a>", "<a href=\"/console/failures?\(link)\">show jobs</a>"]
                }
                var list = "<p class=\"hint\">Choose a group to list its jobs, replay or cancel them.</p>"
                if fields.values.count > 1 {
                    let jobs = try await JobList.render(fields, before: query.text("before").flatMap { Int64($0) }, op: op, path: "/console/failures",
                                                        database: console.database)
                    list = "<h2>Failed jobs of this filter</h2>" + fields.form(action: "/console/failures", op: op, fixed: ["state"]) + jobs
                }
                return HTML.page("Failures", current: "/console/failures", operator: op,
                                 HTML.table("Failed jobs by error code and session", ["organization", "error code", "session", "failed jobs", "newest", ""], rows,
                                            id: "failure-groups") + list)
            }
        }
    }
}

extension JobFilterFields {
    static func link(_ values: [String: String]) -> String {
        var fields = JobFilterFields(Form(""))
        fields.values = values
        return fields.query()
    }
}
