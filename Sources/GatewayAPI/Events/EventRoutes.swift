import Foundation
import HTTPSurface
import HTTPTypes
import Hummingbird
import OutboxCore
import OutboxStore

/// `GET /api/v1/events` (Server-Sent Events) and `POST /api/v1/events/tickets`.
///
/// The stream carries the caller organization's `message.status` events, optionally only some
/// sessions (`?session=a,b`) and statuses (`?status=sent,failed`). It starts with `retry: 3000`;
/// each event is `id: <event id>`, `event: message.status`, `data: <JSON>`; a `: keep-alive`
/// comment comes every 15 s. A client resumes with `Last-Event-ID` (what `EventSource` sends on
/// reconnecting) or `?after=<id>`: the events after it are replayed from the log, then live ones
/// follow, none missed or repeated. A client that falls too far behind is disconnected and resumes
/// the same way.
///
/// Browsers (`EventSource` sends no Authorization header) use a ticket: `?ticket=` from
/// `POST /api/v1/events/tickets`, accepted when the request carries no other credentials.
public struct EventRoutes: Sendable {
    let hub: EventHub
    let tickets: StreamTickets

    public init(hub: EventHub, tickets: StreamTickets) {
        self.hub = hub
        self.tickets = tickets
    }

    public func register(on group: RouterGroup<GatewayContext>) {
        group.get("events") { request, context in try await stream(request, context) }
        group.post("events/tickets") { _, context in
            let principal = try Self.streamReader(context.principal)
            return TicketResponse(ticket: tickets.issue(for: principal), expiresIn: Int(tickets.lifetime.components.seconds))
        }
    }

    struct TicketResponse: ResponseEncodable {
        var ticket: String
        var expiresIn: Int
    }

    /// The caller, if it may read events: `.read` or `.send`.
    static func streamReader(_ principal: Principal?) throws -> Principal {
        guard let principal else { throw APIError.unauthorized("missing or invalid credentials: send Authorization: Bearer <api key or login token>, or ?ticket=") }
        guard !principal.capabilities.isDisjoint(with: [.read, .send]) else {
            throw APIError(.forbidden, .forbidden, "this credential lacks the 'read' capability")
        }
        return principal
    }

    private func stream(_ request: Request, _ context: GatewayContext) async throws -> Response {
        let query = request.uri.queryParameters
        var caller = context.principal
        if caller == nil, let ticket = query["ticket"] {
            guard let principal = tickets.verify(String(ticket)) else { throw APIError.unauthorized("the stream ticket is invalid or expired; ask POST /api/v1/events/tickets for a new one") }
            caller = principal
        }
        let principal = try Self.streamReader(caller)
        let filter = EventFilter(sessions: Self.list(query["session"]), statuses: Self.list(query["status"]))
        let resume = try Self.resumeID(header: request.headers[.lastEventID], query: query["after"].map(String.init))

        let resumeCursor: EventCursor? = if let resume { try await hub.cursor(afterID: resume, org: principal.org) } else { nil }
        let (subscription, replayThrough) = try await hub.subscribe(org: principal.org, filter: filter, resume: resumeCursor)
        let hub = self.hub
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream"
        headers[.cacheControl] = "no-cache"
        headers[.xAccelBuffering] = "no"
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            defer { hub.unsubscribe(subscription) }
            try await request.body.consumeWithInboundCloseHandler { _ in
                try await ServerSentEvents.run(until: subscription) {
                    let output = ServerSentEvents()
                    try await writer.write(output.start())
                    if let resumeCursor, resumeCursor < replayThrough {
                        var cursor = resumeCursor
                        while cursor < replayThrough {
                            let page = try await hub.history(org: principal.org, after: cursor, through: replayThrough)
                            guard let last = page.last else { break }
                            try await writer.write(output.events(page.filter(filter.matches)))
                            cursor = last.cursor
                        }
                    }
                    while let delivery = await subscription.next() {
                        try await writer.write(output.delivery(delivery))
                    }
                }
            } onInboundClosed: {
                subscription.finish(Subscription.End.closed)
            }
            // Cut off for falling behind: close the connection at once (a write may be waiting on the
            // client; no orderly end could be written). Otherwise end the response.
            if subscription.end == .overflow { throw CancellationError() }
            try? await writer.finish(nil)
        })
    }

    static func list(_ value: Substring?) -> Set<String>? {
        guard let value else { return nil }
        let items = value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        return items.isEmpty ? nil : Set(items)
    }

    static func resumeID(header: String?, query: String?) throws -> Int64? {
        if let header, !header.isEmpty {
            guard let id = Int64(header.trimmingCharacters(in: .whitespaces)), id >= 0 else {
                throw APIError.validation("Last-Event-ID must be an event id (a non-negative integer)", details: ["field": "Last-Event-ID"])
            }
            return id
        }
        guard let query else { return nil }
        guard let id = Int64(query), id >= 0 else {
            throw APIError.validation("after must be an event id (a non-negative integer)", details: ["field": "after"])
        }
        return id
    }
}

extension HTTPField.Name {
    static let lastEventID = Self("Last-Event-ID")!
    static let xAccelBuffering = Self("X-Accel-Buffering")!
}
