import ArgumentParser
import Foundation
import Hummingbird
import ServiceLifecycle
import UnixSignals
import Simulator

struct SimulatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulator",
        abstract: "Run the WhatsApp simulator as an HTTP server speaking wuzapi's API."
    )

    @OptionGroup var simulator: SimulatorOptions
    @Option(help: "HOST:PORT to listen on.") var listen: String = "127.0.0.1:8088"
    @Option(name: .customLong("delivery-log"), help: "JSON lines, one per accepted operation.") var deliveryLog: String?

    func run() async throws {
        let logger = makeLogger("wa-outbox.simulator")
        let parts = listen.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1]) else { throw ValidationError("--listen takes HOST:PORT") }
        let sim = try WhatsAppSimulator(configuration: simulator.configuration, deliveryLog: deliveryLog.map { URL(fileURLWithPath: $0) })
        let app = Application(
            router: WuzapiDialect.router(sim),
            configuration: .init(address: .hostname(String(parts[0]), port: port), serverName: "wa-outbox-simulator"),
            logger: logger
        )
        let group = ServiceGroup(services: [app], gracefulShutdownSignals: [.sigterm, .sigint], cancellationSignals: [], logger: logger)
        try await group.run()
        sim.flush()
        let stats = sim.stats
        FileHandle.standardError.write(Data("simulator: delivered \(stats.delivered), suppressed duplicates \(stats.suppressedDuplicates)\n".utf8))
    }
}
