import Foundation
import Hummingbird
import Logging
import OutboxCore

/// The error every HTTP surface answers with (the admin port today, the gateway API next), in the
/// gateway API's envelope: `{"error":{"code":"not_found","message":"no such job","details":{}}}`.
///
/// `code` is one of the stable `ErrorCode`s; `message` is for a person; `details` carries
/// machine-readable context (empty when there is none). Thrown from a route, it renders itself
/// (Hummingbird's `HTTPResponseError`); `APIErrorMiddleware` turns every other error into one, so
/// no surface ever answers with another shape.
public struct APIError: HTTPResponseError, Sendable, Equatable {
    public var status: HTTPResponse.Status
    public var code: ErrorCode
    public var message: String
    public var details: [String: String]

    public init(_ status: HTTPResponse.Status, _ code: ErrorCode, _ message: String, details: [String: String] = [:]) {
        self.status = status
        self.code = code
        self.message = message
        self.details = details
    }

    public static func validation(_ message: String, details: [String: String] = [:]) -> APIError {
        APIError(.badRequest, .validationError, message, details: details)
    }

    public static func notFound(_ message: String) -> APIError {
        APIError(.notFound, .notFound, message)
    }

    public static func unauthorized(_ message: String) -> APIError {
        APIError(.unauthorized, .unauthorized, message)
    }

    /// The envelope, as JSON.
    public struct Envelope: Codable, Sendable, Equatable {
        public struct Body: Codable, Sendable, Equatable {
            public var code: String
            public var message: String
            public var details: [String: String]
        }

        public var error: Body
    }

    public var envelope: Envelope {
        Envelope(error: .init(code: code.rawValue, message: message, details: details))
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var response = Response(status: status, body: .init(byteBuffer: ByteBuffer(bytes: try encoder.encode(envelope))))
        response.headers[.contentType] = "application/json"
        // A 429 or 503 says when to come back, in the header as well as in `details`.
        if let retryAfter = details["retryAfter"] { response.headers[.retryAfter] = retryAfter }
        return response
    }
}

extension APIError {
    /// The answer for any error a route or the framework throws.
    ///
    /// - `APIError`: itself.
    /// - `OutboxError` (the domain's): its code, with the status that code has in the API.
    /// - Hummingbird's `HTTPError` (an unknown route, a body that does not decode): the code its
    ///   status stands for, with its message; any other `HTTPResponseError` under 500 likewise.
    /// - Anything else: 500 `internal_error`, without the error's text (it may name internals).
    public init(_ error: any Error) {
        switch error {
        case let error as APIError:
            self = error
        case let error as OutboxError:
            self.init(Self.status(of: error.code), error.code, error.message)
        case let error as HTTPError:
            self.init(error.status, Self.code(of: error.status), error.body ?? error.status.reasonPhrase)
        case let error as any HTTPResponseError where error.status.code < 500:
            // The framework's own refusals, such as NIO's too-many-bytes for a body past a route's
            // limit (413), keep their status instead of becoming a 500.
            self.init(error.status, Self.code(of: error.status), error.status.code == 413 ? "the body is too large" : error.status.reasonPhrase)
        default:
            self.init(.internalServerError, .internalError, "internal error")
        }
    }

    /// The HTTP status each error code answers with.
    public static func status(of code: ErrorCode) -> HTTPResponse.Status {
        switch code {
        case .validationError, .editWindowExpired, .revokeWindowExpired, .invalidRecipient: .badRequest
        case .unauthorized: .unauthorized
        case .forbidden: .forbidden
        case .notFound: .notFound
        case .idempotencyKeyReused: .unprocessableContent
        case .idempotencyKeyInUse, .sessionUnavailable, .accountRestricted: .conflict
        case .payloadTooLarge: .contentTooLarge
        case .headersTooLarge: .init(code: 431, reasonPhrase: "Request Header Fields Too Large")
        case .rateLimited: .tooManyRequests
        case .notImplemented: .notImplemented
        default: .internalServerError
        }
    }

    static func code(of status: HTTPResponse.Status) -> ErrorCode {
        switch status.code {
        case 401: .unauthorized
        case 403: .forbidden
        case 413: .payloadTooLarge
        case 431: .headersTooLarge
        case 404, 405: .notFound
        case 429: .rateLimited
        case 501: .notImplemented
        case 400..<500: .validationError
        default: .internalError
        }
    }
}

/// Renders every error that reaches it as an `APIError`. Add it to a router before its routes
/// (Hummingbird applies a router's middleware to the routes added after it, and to unknown routes).
public struct APIErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    public init() {}

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            let answer = APIError(error)
            if answer.status == .internalServerError {
                // The route's pattern, not the path: a path can carry a secret (a webhook's URL secret).
                context.logger.error("request failed", metadata: ["error": "\(error)", "route": "\(context.endpointPath ?? "unknown")"])
            }
            throw answer
        }
    }
}
