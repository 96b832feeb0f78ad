import Foundation
import Hummingbird
import OutboxStore

/// The text of an event stream (https://html.spec.whatwg.org/multipage/server-sent-events.html).
struct ServerSentEvents {
    private let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()

    /// The reconnection delay a client should use, and a first flush so proxies open the stream.
    func start() -> ByteBuffer {
        ByteBuffer(string: "retry: 3000\n\n")
    }

    func delivery(_ delivery: Subscription.Delivery) throws -> ByteBuffer {
        var buffer = try events(delivery.events)
        if delivery.keepAlive { buffer.writeString(": keep-alive\n\n") }
        return buffer
    }

    func events(_ events: [StatusEvent]) throws -> ByteBuffer {
        var buffer = ByteBuffer()
        for event in events {
            buffer.writeString("id: \(event.id)\nevent: message.status\ndata: ")
            buffer.writeBytes(try encoder.encode(Payload(event)))
            buffer.writeString("\n\n")
        }
        return buffer
    }

    /// A `message.status` event's data, named as the SendResult is.
    struct Payload: Encodable {
        var event: StatusEvent
        init(_ event: StatusEvent) { self.event = event }

        enum CodingKeys: String, CodingKey {
            case outboxId, waMessageId, status, mode, timestamp, session, errorCode
        }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(event.outboxId, forKey: .outboxId)
            try container.encode(event.waMessageId, forKey: .waMessageId)
            try container.encode(event.status, forKey: .status)
            try container.encode(event.mode, forKey: .mode)
            // Unix seconds, as in the SendResult.
            try container.encode(Int64(event.timestamp.rounded(.down)), forKey: .timestamp)
            try container.encode(event.session, forKey: .session)
            try container.encode(event.errorCode, forKey: .errorCode)
        }
    }

    /// Runs `operation` (the writer of one stream) until it returns or `subscription` ends; an
    /// ended subscription cancels it, even while a write waits for a client that does not read.
    static func run(until subscription: Subscription, _ operation: () async throws -> Void) async throws {
        try await withoutActuallyEscaping(operation) { operation in
            let writer = Unchecked(operation)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { await subscription.ended() }
                group.addTask {
                    // However the writer ends (a failed write: the client is gone), the stream is over.
                    defer { subscription.finish(.closed) }
                    try await writer.value()
                }
                _ = try await group.next()
                group.cancelAll()
                while !group.isEmpty {
                    do { _ = try await group.next() } catch is CancellationError {}
                }
            }
        }
    }
}

/// A non-Sendable value handed to a child task that the handing function outlives (see `run(until:)`).
private struct Unchecked<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
