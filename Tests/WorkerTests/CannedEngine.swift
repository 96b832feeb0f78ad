import Foundation
import Hummingbird
import NIOConcurrencyHelpers
import NIOCore

/// An HTTP server that answers every request with one canned answer and records what it was
/// asked: an engine that says exactly what a fixture says, for replaying fixtures against an adapter.
final class CannedEngine: Sendable {
    struct Recorded: Sendable {
        var method: String
        var path: String
        var body: Data
    }

    private struct State {
        var status = 200
        var body = Data()
        var requests: [Recorded] = []
    }

    private let state = NIOLockedValueBox(State())
    private let task: Task<Void, any Error>
    let baseURL: String

    private init(task: Task<Void, any Error>, baseURL: String) {
        self.task = task
        self.baseURL = baseURL
    }

    static func start() async throws -> CannedEngine {
        let (stream, continuation) = AsyncStream<Int>.makeStream()
        let box = NIOLockedValueBox<CannedEngine?>(nil)
        let responder = Responder { box.withLockedValue { $0 } }
        let app = Application(responder: responder, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                              onServerRunning: { channel in continuation.yield(channel.localAddress?.port ?? 0) })
        let task = Task { try await app.run() }
        var port = 0
        for await value in stream { port = value; break }
        let engine = CannedEngine(task: task, baseURL: "http://127.0.0.1:\(port)")
        box.withLockedValue { $0 = engine }
        return engine
    }

    /// The next answers: `status` with `json` (nil: an empty body) or `text`.
    func answer(status: UInt, json: Any?, text: String?) throws {
        let body: Data = if let text { Data(text.utf8) } else if let json {
            try JSONSerialization.data(withJSONObject: json, options: [.fragmentsAllowed])
        } else { Data() }
        state.withLockedValue { $0.status = Int(status); $0.body = body; $0.requests.removeAll() }
    }

    var requests: [Recorded] { state.withLockedValue { $0.requests } }

    func stop() { task.cancel() }

    fileprivate func respond(_ request: Request) async throws -> Response {
        let body = try await request.body.collect(upTo: 1 << 20)
        let (status, answer) = state.withLockedValue { state in
            state.requests.append(Recorded(method: request.method.rawValue, path: request.uri.string, body: Data(body.readableBytesView)))
            return (state.status, state.body)
        }
        var response = Response(status: .init(code: status), body: .init(byteBuffer: ByteBuffer(bytes: answer)))
        if !answer.isEmpty { response.headers[.contentType] = answer.first == UInt8(ascii: "{") ? "application/json" : "text/plain" }
        return response
    }

    private struct Responder: HTTPResponder {
        typealias Context = BasicRequestContext
        let engine: @Sendable () -> CannedEngine?

        func respond(to request: Request, context: Context) async throws -> Response {
            guard let engine = engine() else { return Response(status: .serviceUnavailable) }
            return try await engine.respond(request)
        }
    }
}
