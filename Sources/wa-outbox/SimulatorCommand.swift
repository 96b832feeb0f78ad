import ArgumentParser
import Foundation
import Hummingbird
import LineOutput
import ServiceLifecycle
import UnixSignals
import Simulator

struct SimulatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulator",
        abstract: "Run the WhatsApp simulator as an HTTP server speaking WAHA's or wuzapi's API."
    )

    enum Dialect: String, ExpressibleByArgument, CaseIterable { case waha, wuzapi }

    @OptionGroup var simulator: SimulatorOptions
    @Option(help: "HOST:PORT to listen on.") var listen: String = "127.0.0.1:8088"
    @Option(name: .customLong("delivery-log"), help: "JSON lines, one per accepted operation.") var deliveryLog: String?
    @Option(help: "The engine API to speak: waha or wuzapi.") var dialect: Dialect = .wuzapi
    @Option(name: .customLong("api-key"), help: "WAHA dialect: the X-Api-Key to require (default: any).") var apiKey: String?
    @Option(name: .customLong("webhook-url"), help: "Where to post receipt webhooks; {session} is replaced by the session id.")
    var webhookURL: String?
    @Option(name: .customLong("webhook-secret"), help: "The HMAC secret that signs receipt webhooks (env: WA_OUTBOX_SIM_WEBHOOK_SECRET).")
    var webhookSecret: String?
    @Flag(name: .customLong("webhook-chaos"), help: "Send every receipt webhook twice, and a stale 'delivered' after each 'read'.")
    var webhookChaos = false

    func run() async throws {
        let logger = makeLogger("wa-outbox.simulator")
        let parts = listen.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1]) else { throw ValidationError("--listen takes HOST:PORT") }
        let sim = try WhatsAppSimulator(configuration: simulator.configuration, deliveryLog: deliveryLog.map { URL(fileURLWithPath: $0) })
        let app = Application(
            router: router(sim),
            configuration: .init(address: .hostname(String(parts[0]), port: port), serverName: "wa-outbox-simulator"),
            logger: logger
        )
        let group = ServiceGroup(services: [app], gracefulShutdownSignals: [.sigterm, .sigint], cancellationSignals: [], logger: logger)
        try await group.run()
        await sim.flush()
        let stats = sim.stats
        LogSetup.standardError.write(("simulator: delivered \(stats.delivered), suppressed duplicates \(stats.suppressedDuplicates), delivered twice \(stats.deliveredTwice)\n"))
    }

    private func router(_ sim: WhatsAppSimulator) -> Router<BasicRequestContext> {
        let secret = webhookSecret ?? environment["WA_OUTBOX_SIM_WEBHOOK_SECRET"] ?? ""
        let webhook = webhookURL.map { WebhookTarget(url: $0, secret: secret, chaos: webhookChaos) }
        switch dialect {
        case .waha: return WahaDialect.router(sim, apiKey: apiKey, webhook: webhook)
        case .wuzapi: return WuzapiDialect.router(sim, webhook: webhook)
        }
    }
}
