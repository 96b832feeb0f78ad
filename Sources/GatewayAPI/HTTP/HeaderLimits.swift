import Foundation
import HTTPSurface
import HTTPTypes
import Hummingbird
import HummingbirdCore
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import OutboxCore

/// How large a request's header block may be, and the server that enforces it.
///
/// NIO's HTTP parser counts the bytes of header names and values (not the request line) and the
/// fields; past either limit it stops with `headerOverflow`, which Hummingbird answers with an
/// empty 400. `HeaderOverflowHandler` answers 431 in the API's error envelope instead.
public enum HeaderLimits {
    /// Header names and values together: 16 KiB (what nginx and most proxies allow per request
    /// line and header, with room for a large login JWT).
    public static let maxBytes = 16 * 1024
    /// Header fields.
    public static let maxFields = 100

    /// The gateway API's HTTP/1.1 server: these limits, answered with 431.
    public static var server: HTTPServerBuilder {
        .http1(configuration: HTTP1Channel.Configuration(
            additionalChannelHandlers: [HeaderOverflowHandler()],
            httpDecoderConfiguration: .init(maxHeaderFieldSize: maxBytes, maxHeaderListSize: maxBytes, maxHeaderFieldCount: maxFields)))
    }
}

/// Turns the parser's `headerOverflow` into 431 `headers_too_large` with the error envelope.
///
/// It sits after the HTTP codec, so it sees parsed requests, responses and the parser's errors.
/// It answers only while no response is under way on the connection (a pipelined request behind
/// one still being answered keeps Hummingbird's 400), then closes its sending side and reads and
/// drops what the client still sends, for at most `drainTime`, so the client reads the answer
/// instead of a reset; then it closes the connection.
final class HeaderOverflowHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    static let drainTime: TimeAmount = .seconds(2)

    /// Requests read whose response has not ended.
    private var open = 0
    private var answered = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !answered else { return }
        if case .head = unwrapInboundIn(data) { open += 1 }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { open -= 1 }
        context.write(data, promise: promise)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard !answered else { return }
        guard let parserError = error as? HTTPParserError, parserError == .headerOverflow, open == 0 else {
            context.fireErrorCaught(error)
            return
        }
        answered = true
        let refusal = APIError(APIError.status(of: .headersTooLarge), .headersTooLarge,
                             "the request's headers are larger than \(HeaderLimits.maxBytes) bytes or more than \(HeaderLimits.maxFields) fields",
                             details: ["maxBytes": String(HeaderLimits.maxBytes), "maxFields": String(HeaderLimits.maxFields)])
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let body = ByteBuffer(bytes: (try? encoder.encode(refusal.envelope)) ?? Data())
        var head = HTTPResponse(status: refusal.status)
        head.headerFields[.contentType] = "application/json"
        head.headerFields[.contentLength] = String(body.readableBytes)
        head.headerFields[.connection] = "close"
        RequestMetrics.recordUnparsed(status: Int(refusal.status.code))
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(body)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            bound.value.close(mode: .output, promise: nil)
        }
        context.eventLoop.scheduleTask(in: Self.drainTime) { bound.value.close(promise: nil) }
    }
}
