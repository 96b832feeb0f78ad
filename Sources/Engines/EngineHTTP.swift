import AsyncHTTPClient
import Foundation
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import OutboxCore

/// One HTTP call to an engine, with its failures mapped to the retry policy's classes: no answer
/// in time is `.timeout` (ambiguous: the request may have arrived), anything else that stops the
/// exchange is `.transient`. The caller classifies non-2xx answers itself.
struct EngineHTTP: Sendable {
    var name: String
    var baseURL: String
    var headers: [(String, String)]
    var requestTimeout: Duration
    var client: HTTPClient
    /// The engine server, `scheme://host:port`: what dispatches are gated by.
    let host: String

    init(name: String, baseURL: String, headers: [(String, String)], requestTimeout: Duration, client: HTTPClient?) {
        self.name = name
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.host = Self.host(of: baseURL)
        self.headers = headers
        self.requestTimeout = requestTimeout
        self.client = client ?? Self.client
    }

    func call(_ method: HTTPMethod, _ path: String, json body: (any Encodable)? = nil) async throws(DispatchFailure) -> (status: UInt, body: Data) {
        var encoded: Data?
        if let body {
            guard let data = try? JSONEncoder().encode(body) else { throw .permanent(.validationError, "cannot encode the request to \(name)") }
            encoded = data
        }
        do {
            var request = HTTPClientRequest(url: baseURL + path)
            request.method = method
            for (name, value) in headers { request.headers.add(name: name, value: value) }
            if let encoded {
                request.headers.add(name: "Content-Type", value: "application/json")
                request.body = .bytes(ByteBuffer(data: encoded))
            }
            let timeout = TimeAmount.nanoseconds(Int64(requestTimeout.components.seconds) * 1_000_000_000
                                                 + requestTimeout.components.attoseconds / 1_000_000_000)
            let response = try await client.execute(request, timeout: timeout)
            return (response.status.code, Data(buffer: try await response.body.collect(upTo: 4 << 20)))
        } catch let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout {
            throw .timeout("\(name) did not answer within \(requestTimeout)")
        } catch let error as HTTPClientError where error == .connectTimeout {
            throw .transient("cannot connect to \(name) at \(baseURL): connect timeout")
        } catch {
            throw .transient("\(name) request failed: \(error)")
        }
    }

    /// The client every engine adapter uses. Unlike `HTTPClient.shared` (a browser's settings),
    /// it never follows a redirect (a send answered with a redirect is not sent again somewhere
    /// else), gives up connecting after 10 s instead of 90, and keeps up to
    /// `EngineHosts.connectionsPerHost` connections to each engine host instead of 8: one WAHA or wuzapi
    /// server carries many sessions, and its sends take hundreds of milliseconds each.
    static let client: HTTPClient = HTTPClient(
        eventLoopGroup: HTTPClient.defaultEventLoopGroup,
        configuration: HTTPClient.Configuration(
            redirectConfiguration: .disallow,
            timeout: .init(connect: .seconds(10), read: .seconds(60)),
            connectionPool: .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: EngineHosts.connectionsPerHost),
            decompression: .disabled
        )
    )
}

extension EngineHTTP {
    /// `scheme://host:port` of a URL, lowercased.
    static func host(of url: String) -> String {
        guard let schemeEnd = url.range(of: "://") else { return url.lowercased() }
        let authority = url[schemeEnd.upperBound...].prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        return String(url[..<schemeEnd.upperBound] + authority).lowercased()
    }
}

/// The engine servers a worker talks to.
public enum EngineHosts {
    /// Connections kept to one engine server (WAHA or wuzapi), and dispatches to it at once per
    /// worker; the worker keeps the rest waiting as plain records (`DispatchGate`).
    public static let connectionsPerHost = 32
}

/// A JSON value of an engine request body.
enum EngineJSON: Encodable, Equatable {
    case string(String), number(Double), bool(Bool), strings([String]), object([String: EngineJSON]), array([EngineJSON])

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .string(let value): try container.encode(value)
        case .number(let value): try container.encode(value)
        case .bool(let value): try container.encode(value)
        case .strings(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        }
    }
}

/// What the engines' own error texts say about WhatsApp's answer.
enum EngineErrors {
    /// WhatsApp's code for a refused send, from the engine's own error text: whatsmeow's
    /// `server returned error <code>` (its `ErrServerReturnedError`, passed on by wuzapi and WAHA
    /// GOWS), or Baileys' `rate-overlimit` (WAHA NOWEB). Nil when the text has neither: a number
    /// elsewhere in the text (a phone number, a message id) is never taken for a code.
    static func whatsAppCode(in text: String) -> Int? {
        if text.contains("rate-overlimit") { return 429 }
        guard let range = text.range(of: "server returned error ") else { return nil }
        return Int(text[range.upperBound...].prefix { $0.isNumber })
    }
}
