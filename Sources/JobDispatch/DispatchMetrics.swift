import Metrics

/// Dispatch metrics, through swift-metrics. Labels stay low-cardinality: engine only.
enum DispatchMetrics {
    static func dispatchDuration(_ duration: Duration, engine: String) {
        Timer(label: "wa_outbox_dispatch_duration_seconds", dimensions: [("engine", engine)]).recordNanoseconds(
            duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000)
    }

    static func reconciled(engine: String) { Counter(label: "wa_outbox_reconciled_total", dimensions: [("engine", engine)]).increment() }
    static func redisError() { Counter(label: "wa_outbox_redis_errors_total").increment() }
}
