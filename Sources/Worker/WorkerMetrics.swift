import Metrics
import OutboxCore
import OutboxStore

/// The worker's metrics, through swift-metrics (exported by the admin port's Prometheus registry).
///
/// Labels stay low-cardinality: kind, outcome, engine, reason. Never a job, session, chat or org id.
enum WorkerMetrics {
    static func outcome(_ outcome: Outcome, kind: JobKind) {
        let name: String
        switch outcome {
        case .succeeded: name = "succeeded"
        case .failed: name = "failed"
        case .retry:
            name = "retried"
            Counter(label: "wa_outbox_retries_total").increment()
        case .defer_(_, let code, _):
            name = "deferred"
            Counter(label: "wa_outbox_deferrals_total", dimensions: [("reason", code.rawValue)]).increment()
        }
        Counter(label: "wa_outbox_jobs_total", dimensions: [("kind", kind.rawValue), ("outcome", name)]).increment()
    }

    static func inFlight(_ count: Int) { Gauge(label: "wa_outbox_in_flight").record(count) }
    static func rescued(_ count: Int) { Counter(label: "wa_outbox_lease_rescues_total").increment(by: count) }
    static func postgresError() { Counter(label: "wa_outbox_postgres_errors_total").increment() }

    static func queue(_ gauges: QueueGauges) {
        Gauge(label: "wa_outbox_queue_depth").record(gauges.queued)
        Gauge(label: "wa_outbox_oldest_queued_seconds").record(gauges.oldestQueuedSeconds)
        // Fleet-wide, the same in every worker; what deploy/ scales on (docs/operations.md).
        Gauge(label: "wa_outbox_runnable_demand").record(gauges.runnableDemand)
        Gauge(label: "wa_outbox_dispatch_demand").record(gauges.dispatchDemand)
    }
}
