import Foundation
import HTTPSurface
import Hummingbird
import OutboxStore

/// `/console/sessions`: each session's state and why, its engine's status and when it was asked,
/// its jobs in flight and queued, its limits; pause and resume with a reason (audited).
struct SessionsPage: Sendable {
    let console: Console

    func register<Context: RequestContext>(on router: Router<Context>) {
        router.get("/console/sessions") { request, _ in
            try await console.page(request) { op in
                HTML.page("Sessions", current: "/console/sessions", operator: op, try await body(op, notice: request.uri.queryParameters.get("done")))
            }
        }
        router.post("/console/sessions/:id/:change") { request, context in
            let (op, form) = try await console.action(request)
            guard let id = context.parameters.get("id"), let change = context.parameters.get("change"), ["pause", "resume"].contains(change) else {
                throw APIError.notFound("no such session action: use pause or resume")
            }
            guard let session = try await SessionRegistry.find(id, in: console.database), op.sees(session.org) else {
                throw APIError.notFound("no session \(id)")
            }
            guard let reason = form.text("reason") else { throw APIError.validation("a reason is required") }
            var changes = SessionRegistry.Changes()
            changes.state = change == "pause" ? "paused" : "active"
            changes.reason = "\(reason) (\(op.name))"
            try await SessionRegistry.update(id, org: session.org, changes, in: console.database)
            try await ConsoleQueries.audit(actor: op.name, action: change, session: id, org: session.org, reason: reason, in: console.database)
            return HTML.redirect("/console/sessions?done=" + HTML.query("\(change == "pause" ? "Paused" : "Resumed") \(id)"))
        }
    }

    func body(_ op: ConsoleOperator, notice: String?) async throws -> String {
        let sessions = try await SessionRegistry.all(in: console.database, org: op.org)
        let queues = try await ConsoleQueries.sessionQueues(org: op.org, in: console.database)
        let rows = sessions.map { session in
            let queue = queues[session.id]
            let limits = [session.ratePerSecond.map { "\($0)/s" }, session.burst.map { "burst \($0)" },
                          session.pacing.map { $0 ? "paced \(session.minGapMilliseconds ?? 0)–\(session.maxGapMilliseconds ?? 0) ms" : "no pacing" },
                          session.hourlyBudget.map { "\($0)/h" }, session.dailyBudget.map { "\($0)/day" }]
                .compactMap { $0 }.joined(separator: ", ")
            let next = session.state == "active" ? "pause" : "resume"
            let form = """
                <form class="inline" method="post" action="/console/sessions/\(HTML.query(session.id))/\(next)">\(HTML.csrfField(op))
                <label class="visually-hidden" for="reason-\(h(session.id))">Reason</label>
                <input id="reason-\(h(session.id))" name="reason" required placeholder="reason" maxlength="500">
                <button type="submit"\(next == "pause" ? " class=\"danger\"" : "")>\(next == "pause" ? "Pause" : "Resume")</button></form>
                """
            return [h(session.id), h(session.org), h(session.engine),
                    HTML.badge(session.state) + (session.stateReason.map { "<br><small>\(h($0))</small>" } ?? ""),
                    HTML.badge(session.engineStatus ?? "unknown") + "<br><small>checked \(HTML.time(queue?.statusCheckedAt))</small>",
                    "\(h(session.inFlight ?? 0)) / \(h(session.maxInFlight))", h(queue?.queued ?? 0),
                    limits.isEmpty ? "<small>worker defaults</small>" : h(limits), form]
        }
        return (notice.map { "<p class=\"notice\" role=\"status\">\(h($0))</p>" } ?? "")
            + HTML.table("\(sessions.count) sessions", ["session", "organization", "engine", "state", "engine status", "busy chats / max in flight",
                                                       "queued", "limits", "action"], rows, id: "sessions-table")
    }
}
