import ArgumentParser
import Foundation
import Logging
import PostgresClient
import Simulator
import Coordination

let environment = ProcessInfo.processInfo.environment

/// `option ?? $WA_OUTBOX_NAME ?? fallback`: every setting has an environment variable.
func setting<T: LosslessStringConvertible>(_ option: T?, _ variable: String, _ fallback: T) -> T {
    option ?? environment[variable].flatMap(T.init) ?? fallback
}

/// Connection settings shared by every subcommand that talks to the database.
struct DatabaseOptions: ParsableArguments {
    @Option(name: .customLong("database-url"), help: "PostgreSQL URL or conninfo (env: DATABASE_URL).")
    var databaseURL: String?

    func configuration() throws -> PostgresConfiguration {
        guard let url = databaseURL ?? environment["DATABASE_URL"], !url.isEmpty else {
            throw ValidationError("no database: pass --database-url or set DATABASE_URL (postgres://user:pass@host:port/db)")
        }
        return PostgresConfiguration(url)
    }

    func database(connections: Int, logger: Logger) throws -> PostgresDatabase {
        PostgresDatabase(configuration: try configuration(), maxConnections: connections, logger: logger)
    }
}

/// How the built-in simulator misbehaves (the `simulator` command, and `sim` sessions in a worker).
struct SimulatorOptions: ParsableArguments {
    @Option(name: .customLong("sim-latency-ms"), help: "Latency added to every operation (env: WA_OUTBOX_SIM_LATENCY_MS).")
    var latencyMilliseconds: Int?
    @Option(name: .customLong("sim-transient-rate"), help: "Share of operations failing transiently, 0...1 (env: WA_OUTBOX_SIM_TRANSIENT_RATE).")
    var transientRate: Double?
    @Option(name: .customLong("sim-ambiguous-rate"), help: "Share delivered but answered too late, 0...1 (env: WA_OUTBOX_SIM_AMBIGUOUS_RATE).")
    var ambiguousRate: Double?
    @Option(name: .customLong("sim-ambiguous-delay-ms"), help: "How late an ambiguous answer comes (env: WA_OUTBOX_SIM_AMBIGUOUS_DELAY_MS).")
    var ambiguousDelayMilliseconds: Int?
    @Option(name: .customLong("sim-rate-limit"), help: "Operations per second per session before 429 (env: WA_OUTBOX_SIM_RATE_LIMIT).")
    var rateLimit: Int?
    @Option(name: .customLong("sim-not-connected-delay-ms"), help: "How long a send to a session that is not connected hangs before it is refused; WAHA takes about 5000 (env: WA_OUTBOX_SIM_NOT_CONNECTED_DELAY_MS).")
    var notConnectedDelayMilliseconds: Int?

    var configuration: SimulatorConfiguration {
        var configuration = SimulatorConfiguration()
        configuration.latency = .milliseconds(setting(latencyMilliseconds, "WA_OUTBOX_SIM_LATENCY_MS", 0))
        configuration.transientFailureRate = setting(transientRate, "WA_OUTBOX_SIM_TRANSIENT_RATE", 0)
        configuration.ambiguousTimeoutRate = setting(ambiguousRate, "WA_OUTBOX_SIM_AMBIGUOUS_RATE", 0)
        configuration.ambiguousDelay = .milliseconds(setting(ambiguousDelayMilliseconds, "WA_OUTBOX_SIM_AMBIGUOUS_DELAY_MS", 3_000))
        configuration.rateLimitPerSecond = rateLimit ?? environment["WA_OUTBOX_SIM_RATE_LIMIT"].flatMap(Int.init)
        configuration.notConnectedDelay = .milliseconds(setting(notConnectedDelayMilliseconds, "WA_OUTBOX_SIM_NOT_CONNECTED_DELAY_MS", 0))
        return configuration
    }
}

/// A logger for a command; the first call sets up the logging system (`LogSetup`).
func makeLogger(_ label: String) -> Logger {
    _ = LogSetup.once
    var logger = Logger(label: label)
    logger.logLevel = environment["WA_OUTBOX_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info
    return logger
}

/// Prints a value as one line of JSON.
func printJSON<T: Encodable>(_ value: T) {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    if let data = try? encoder.encode(value) { print(String(decoding: data, as: UTF8.self)) }
}

/// The API's error body: `{"error": {"code": ..., "message": ...}}`.
struct ErrorBody: Encodable {
    struct Inner: Encodable { var code: String; var message: String }
    var error: Inner
}

/// The default limits of sessions that do not set their own (`wa_outbox.sessions` columns).
struct LimitOptions: ParsableArguments {
    @Option(name: .customLong("rate-per-second"), help: "Sends per second per session (env: WA_OUTBOX_RATE_PER_SECOND; default 1).")
    var ratePerSecond: Double?
    @Option(help: "Sends at once after a quiet period (env: WA_OUTBOX_BURST; default 5).")
    var burst: Int?
    @Option(help: "Anti-ban pacing on|off (env: WA_OUTBOX_PACING; default on).")
    var pacing: String?
    @Option(name: .customLong("min-gap-ms"), help: "Pacing: shortest gap between two sends of a session (env: WA_OUTBOX_MIN_GAP_MS; default 1500).")
    var minGap: Int?
    @Option(name: .customLong("max-gap-ms"), help: "Pacing: longest gap; the gap is random in between (env: WA_OUTBOX_MAX_GAP_MS; default 5000).")
    var maxGap: Int?
    @Option(name: .customLong("hourly-budget"), help: "Sends per session per clock hour (env: WA_OUTBOX_HOURLY_BUDGET; default unlimited).")
    var hourlyBudget: Int?
    @Option(name: .customLong("daily-budget"), help: "Sends per session per UTC day (env: WA_OUTBOX_DAILY_BUDGET; default unlimited).")
    var dailyBudget: Int?

    var defaults: SessionLimits {
        SessionLimits(
            ratePerSecond: setting(ratePerSecond, "WA_OUTBOX_RATE_PER_SECOND", 1),
            burst: setting(burst, "WA_OUTBOX_BURST", 5),
            pacing: setting(pacing, "WA_OUTBOX_PACING", "on") != "off",
            minGapMilliseconds: setting(minGap, "WA_OUTBOX_MIN_GAP_MS", 1_500),
            maxGapMilliseconds: setting(maxGap, "WA_OUTBOX_MAX_GAP_MS", 5_000),
            hourlyBudget: hourlyBudget ?? environment["WA_OUTBOX_HOURLY_BUDGET"].flatMap(Int.init),
            dailyBudget: dailyBudget ?? environment["WA_OUTBOX_DAILY_BUDGET"].flatMap(Int.init)
        )
    }
}
