import ArgumentParser
import Logging
import OTel
import ServiceLifecycle
import Tracing

/// `--otel on|off` (env WA_OUTBOX_OTEL): whether the process exports its spans over OTLP/HTTP.
/// Off by default, and then the process's tracer is swift-distributed-tracing's `NoOpTracer`: a
/// job still keeps its request's `traceparent`, and nothing else changes.
struct TracingOptions: ParsableArguments {
    @Option(name: .customLong("otel"), help: """
        on: export spans over OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT (default http://localhost:4318); off: no tracer \
        (env: WA_OUTBOX_OTEL; default on when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, else off).
        """)
    var otel: String?

    /// Whether the exporter is on: the option, else WA_OUTBOX_OTEL, else whether an OTLP endpoint is set.
    func isOn() throws -> Bool {
        let endpointSet = ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"].contains { !(environment[$0] ?? "").isEmpty }
        switch (otel ?? environment["WA_OUTBOX_OTEL"])?.lowercased() {
        case nil, "": return endpointSet
        case "on", "true", "1": return true
        case "off", "false", "0": return false
        case let other?: throw ValidationError("--otel (WA_OUTBOX_OTEL) takes on or off, not \(other)")
        }
    }

    /// Bootstraps the process's tracer with swift-otel's OTLP/HTTP exporter when on, and returns
    /// the exporter's service, to run in the process's service group (it flushes at shutdown).
    /// The standard OTEL_* variables (endpoint, headers, sampler, OTEL_SERVICE_NAME) apply.
    func bootstrap(serviceName: String, logger: Logger) throws -> ServiceGroupConfiguration.ServiceConfiguration? {
        guard try isOn() else { return nil }
        var configuration = OTel.Configuration.default
        configuration.serviceName = serviceName
        configuration.logs.enabled = false
        configuration.metrics.enabled = false
        configuration.traces.otlpExporter.protocol = .httpProtobuf
        configuration.diagnosticLogger = .custom(logger)
        configuration.diagnosticLogLevel = .warning
        let backend = try OTel.makeTracingBackend(configuration: configuration)
        InstrumentationSystem.bootstrap(backend.factory)
        logger.info("exporting spans over OTLP/HTTP", metadata: ["otel.service": "\(serviceName)"])
        return .init(service: backend.service)
    }
}
