import Foundation
import HTTPSurface
import Hummingbird
import Logging
import OutboxStore

/// Replay and cancel, from the jobs, failures and job pages: `/console/actions/plan` is the dry run
/// (how many jobs the action takes, nothing changed) and its confirmation form posts the same
/// fields to `/console/actions/run`. Both need a reason; the run is audited under the operator's
/// name by `JobQueries` (one audit row per job).
struct JobActions: Sendable {
    let console: Console

    func register<Context: RequestContext>(on router: Router<Context>) {
        router.post("/console/actions/plan") { request, _ in
            let (op, form) = try await console.action(request)
            let action = try Action(form, op: op)
            let dryRun: String
            switch action.kind {
            case .replay:
                let plan = try await JobQueries.planReplay(action.filter, in: console.database)
                dryRun = "Replay would put <b id=\"plan-count\">\(h(plan.done.count))</b> jobs back in the queue and leave <b id=\"plan-skipped\">\(h(plan.skipped.count))</b> as they are."
                    + (plan.skipped.isEmpty ? "" : HTML.table("Left as they are (first 20)", ["job", "why"],
                                                              plan.skipped.prefix(20).map { ["<a href=\"/console/jobs/\($0.id)\">\($0.id)</a>", h($0.reason)] }))
            case .cancel:
                let plan = try await ConsoleQueries.planCancel(action.filter, in: console.database)
                dryRun = "Cancel would cancel <b id=\"plan-count\">\(h(plan.queued))</b> queued jobs and leave <b id=\"plan-skipped\">\(h(plan.others))</b> that are not queued (running, finished)."
            }
            return HTML.response(HTML.page("Dry run: \(action.kind.rawValue)", current: "", operator: op, """
                <p class="notice" role="status">\(dryRun)</p>
                <p>Reason: <q>\(h(action.reason))</q>. Jobs: \(h(action.description))</p>
                <form method="post" action="/console/actions/run">\(HTML.csrfField(op))\(action.hiddenFields)
                <button type="submit" id="confirm"\(action.kind == .cancel ? " class=\"danger\"" : "")>Confirm: \(action.kind.rawValue)</button>
                <a href="/console/failures">Back</a></form>
                """))
        }
        router.post("/console/actions/run") { request, _ in
            let (op, form) = try await console.action(request)
            let action = try Action(form, op: op)
            let report: OperationReport
            switch action.kind {
            case .replay:
                let plan = try await JobQueries.planReplay(action.filter, in: console.database)
                var done = OperationReport()
                done.skipped = plan.skipped
                done.done = try await JobQueries.replayAll(plan.done, actor: op.name, reason: action.reason, newMessageID: false, in: console.database)
                report = done
            case .cancel:
                report = try await JobQueries.cancel(action.filter, actor: op.name, reason: action.reason, in: console.database)
            }
            console.logger.info("console action", metadata: ["operator": "\(op.name)", "action": "\(action.kind.rawValue)", "jobs": "\(report.done.count)"])
            let ids = report.done.prefix(100).map { "<a href=\"/console/jobs/\($0)\">\($0)</a>" }.joined(separator: ", ")
            return HTML.response(HTML.page("Done: \(action.kind.rawValue)", current: "", operator: op, """
                <p class="notice" role="status"><b id="done-count">\(h(report.done.count))</b> jobs \(action.kind == .replay ? "replayed" : "canceled"), \
                <b id="skipped-count">\(h(report.skipped.count))</b> left as they were.</p>
                <p>\(ids)\(report.done.count > 100 ? " …" : "")</p><p><a href="/console/failures">Failures</a> · <a href="/console/jobs">Jobs</a></p>
                """))
        }
    }

    /// What a form asks for: replay or cancel, of the selected ids or of the whole filter, and why.
    struct Action {
        enum Kind: String { case replay, cancel }
        var kind: Kind
        var reason: String
        var filter: JobFilter
        var ids: [Int64]
        var fields: JobFilterFields
        var wholeFilter: Bool

        init(_ form: Form, op: ConsoleOperator) throws {
            guard let kind = form.text("action").flatMap(Kind.init(rawValue:)) else { throw APIError.validation("action must be replay or cancel") }
            guard let reason = form.text("reason") else { throw APIError.validation("a reason is required: it is kept in the audit trail") }
            self.kind = kind
            self.reason = String(reason.prefix(500))
            fields = JobFilterFields(form)
            wholeFilter = form.text("scope") == "filter"
            ids = try form.all("id").map { guard let id = Int64($0) else { throw APIError.validation("job ids are numbers") }; return id }
            if wholeFilter {
                guard !fields.isEmpty else { throw APIError.validation("name the jobs: a filter with at least one field, or a selection") }
                filter = try fields.filter(for: op)
            } else {
                guard !ids.isEmpty else { throw APIError.validation("select at least one job, or choose every job of the filter") }
                filter = op.scoped(JobFilter())
                filter.ids = ids
            }
        }

        var description: String {
            wholeFilter ? "every job of the filter " + fields.values.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ")
                : "\(ids.count) selected"
        }

        var hiddenFields: String {
            "<input type=\"hidden\" name=\"action\" value=\"\(kind.rawValue)\"><input type=\"hidden\" name=\"reason\" value=\"\(h(reason))\">"
                + "<input type=\"hidden\" name=\"scope\" value=\"\(wholeFilter ? "filter" : "selection")\">"
                + (wholeFilter ? fields.hiddenFields : ids.map { "<input type=\"hidden\" name=\"id\" value=\"\($0)\">" }.joined())
        }
    }
}
