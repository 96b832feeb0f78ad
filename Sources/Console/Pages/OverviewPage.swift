import Foundation
import Hummingbird
import OutboxStore

/// `/console`: jobs by state, the last hour's dispatches and failures, the oldest queued job,
/// runnable demand, live workers. The figures refresh every 5 s from `/console/overview/fragment`.
struct OverviewPage: Sendable {
    let console: Console

    func register<Context: RequestContext>(on router: Router<Context>) {
        router.get("/console") { request, _ in
            try await console.page(request) { op in
                let figures = try await figures(op)
                return HTML.page("Overview", current: "/console", operator: op,
                                 "<div data-refresh=\"/console/overview/fragment\" aria-live=\"polite\">\(figures)</div>")
            }
        }
        router.get("/console/overview/fragment") { request, _ in
            guard let op = try await console.loggedIn(request) else { return HTML.response("", status: .unauthorized) }
            return HTML.response(try await figures(op))
        }
    }

    func figures(_ op: ConsoleOperator) async throws -> String {
        let overview = try await ConsoleOverview.read(org: op.org, in: console.database)
        let workers = try await WorkerRecord.all(in: console.database)
        let cards = overview.byState.map { state, count in
            let shown = count.exact ? h(count.value) : "&gt;\u{2009}" + h(count.value) + (count.estimate.map { " <small>(≈\u{2009}\(h($0)))</small>" } ?? "")
            return "<div class=\"card\" data-state=\"\(h(state))\"><div class=\"label\">\(h(state))</div><div class=\"value\">\(shown)</div></div>"
        }.joined()
        var extra = "<div class=\"card\"><div class=\"label\">oldest queued</div><div class=\"value\" id=\"oldest\">\(HTML.age(overview.oldestQueuedSeconds))</div></div>"
        if let demand = overview.runnableDemand {
            extra += "<div class=\"card\"><div class=\"label\">runnable demand</div><div class=\"value\" id=\"demand\">\(h(demand))</div></div>"
        }
        let now = Date()
        let workerRows = workers.filter { $0.leaseExpiresAt > now }.map { worker in
            [h(worker.name), h(worker.host), h(String(worker.pid)), HTML.time(worker.heartbeatAt) + " (\(HTML.age(now.timeIntervalSince(worker.heartbeatAt))) ago)",
             h(worker.inFlight), HTML.time(worker.startedAt)]
        }
        return """
            <section aria-labelledby="states"><h2 id="states">Jobs by state</h2><div class="cards" id="state-counts">\(cards)\(extra)</div>
            <p class="hint">Queued and running are exact (from the lanes); finished jobs are counted up to \(h(ConsoleOverview.limit(org: op.org))), then estimated.</p></section>
            <section aria-labelledby="hour"><h2 id="hour">The last hour</h2>\(Chart.lastHour(overview.minutes, now: now))</section>
            <section aria-labelledby="workers"><h2 id="workers">Live workers</h2>
            \(HTML.table("Workers whose lease is live", ["name", "host", "pid", "last heartbeat", "in flight", "started"], workerRows, id: "workers-table"))</section>
            """
    }
}

/// The last hour as an inline SVG, drawn on the server: dispatches per second (solid line) and
/// failures per minute (dashed line, own scale on the right), one point per minute.
enum Chart {
    static func lastHour(_ minutes: [(start: Date, dispatches: Int, failures: Int)], now: Date) -> String {
        let width = 720.0, height = 220.0, left = 48.0, right = 48.0, top = 12.0, bottom = 28.0
        let plotW = width - left - right, plotH = height - top - bottom
        let end = floor(now.timeIntervalSince1970 / 60) * 60, start = end - 59 * 60
        var dispatch = [Double](repeating: 0, count: 60), failures = [Double](repeating: 0, count: 60)
        for minute in minutes {
            let index = Int((minute.start.timeIntervalSince1970 - start) / 60)
            guard (0..<60).contains(index) else { continue }
            dispatch[index] = Double(minute.dispatches) / 60
            failures[index] = Double(minute.failures)
        }
        let maxDispatch = niceMax(dispatch.max() ?? 0), maxFailures = niceMax(failures.max() ?? 0)
        func path(_ values: [Double], _ maximum: Double) -> String {
            values.enumerated().map { index, value in
                String(format: "%.1f,%.1f", left + plotW * Double(index) / 59, top + plotH * (1 - value / maximum))
            }.joined(separator: " ")
        }
        let labels = stride(from: 0, through: 60, by: 15).map { (ago: Int) -> String in
            let x: Double = left + plotW * Double(60 - ago) / 60
            let text = ago == 0 ? "now" : "−\(ago) min"
            return String(format: "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">", x, height - 8) + text + "</text>"
        }.joined()
        let total = Int(dispatch.reduce(0, +) * 60), failed = Int(failures.reduce(0, +))
        return """
            <div class="legend"><span>━ dispatches per second (left scale, max \(format(maxDispatch)))</span><span>┅ failures per minute (right scale, max \(format(maxFailures)))</span></div>
            <svg class="chart" viewBox="0 0 \(Int(width)) \(Int(height))" role="img" aria-labelledby="chart-title">
            <title id="chart-title">Last hour: \(total) dispatches, \(failed) failures</title>
            <line x1="\(left)" y1="\(top + plotH)" x2="\(left + plotW)" y2="\(top + plotH)" stroke="#aab3bd"/>
            <line x1="\(left)" y1="\(top)" x2="\(left + plotW)" y2="\(top)" stroke="#e3e7eb"/>
            <text x="\(left - 4)" y="\(top + 4)" text-anchor="end">\(format(maxDispatch))/s</text><text x="\(left - 4)" y="\(top + plotH)" text-anchor="end">0</text>
            <text x="\(left + plotW + 4)" y="\(top + 4)">\(format(maxFailures))/min</text><text x="\(left + plotW + 4)" y="\(top + plotH)">0</text>
            \(labels)
            <polyline fill="none" stroke="#0b5cad" stroke-width="2" points="\(path(dispatch, maxDispatch))"/>
            <polyline fill="none" stroke="#a4161a" stroke-width="2" stroke-dasharray="6 4" points="\(path(failures, maxFailures))"/>
            </svg>
            <p class="hint">In the last hour: <b id="hour-dispatches">\(h(total))</b> dispatches, <b id="hour-failures">\(h(failed))</b> failures.</p>
            """
    }

    static func niceMax(_ value: Double) -> Double {
        guard value > 0 else { return 1 }
        let magnitude = pow(10, floor(log10(value)))
        for step in [1.0, 2, 5, 10] where value <= step * magnitude { return step * magnitude }
        return 10 * magnitude
    }

    static func format(_ value: Double) -> String {
        value >= 10 || value == value.rounded() ? String(Int(value)) : String(format: "%.2g", value)
    }
}
