import Foundation
import Hummingbird
import NIOCore
import NIOFoundationCompat
import Synchronization
import TestSupport

/// An OpenTelemetry collector's OTLP/HTTP endpoint on 127.0.0.1: keeps each `/v1/traces` body
/// (protobuf) as it came.
final class OTLPCollector: Sendable {
    private let bodies = Mutex<[Data]>([])
    private let task = Mutex<Task<Void, any Error>?>(nil)
    private let address = Mutex("")

    /// `http://127.0.0.1:PORT`: the value of OTEL_EXPORTER_OTLP_ENDPOINT.
    var url: String { address.withLock { $0 } }

    static func start() async throws -> OTLPCollector {
        let collector = OTLPCollector()
        let (stream, continuation) = AsyncStream<Int>.makeStream()
        let router = Router()
        router.post("/v1/traces") { request, _ -> Response in
            let body = try await request.body.collect(upTo: 16 << 20)
            collector.bodies.withLock { $0.append(Data(buffer: body)) }
            var response = Response(status: .ok)
            response.headers[.contentType] = "application/x-protobuf"
            return response
        }
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                              onServerRunning: { channel in continuation.yield(channel.localAddress?.port ?? 0) }, logger: TestEnvironment.logger)
        collector.task.withLock { $0 = Task { try await app.run() } }
        for await port in stream {
            collector.address.withLock { $0 = "http://127.0.0.1:\(port)" }
            break
        }
        return collector
    }

    /// Every export so far, each a serialized `ExportTraceServiceRequest`.
    var exports: [Data] { bodies.withLock { $0 } }

    func stop() { task.withLock { $0?.cancel() } }
}
