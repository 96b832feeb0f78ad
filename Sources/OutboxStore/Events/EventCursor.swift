/// A place in the `message.status` stream: the writing transaction's id, then the event's id.
///
/// Events become visible in this order, not in id order (a transaction can take a lower id and
/// commit after one with a higher id), so readers keep and compare cursors, never ids alone.
/// Clients see only ids; the server turns a client's `Last-Event-ID` back into a cursor
/// (`EventLog.cursor(afterID:org:in:)`).
public struct EventCursor: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var tx: Int64
    public var id: Int64

    /// Before every event.
    public static let start = EventCursor(tx: 0, id: 0)

    public init(tx: Int64, id: Int64) {
        self.tx = tx
        self.id = id
    }

    public static func < (lhs: EventCursor, rhs: EventCursor) -> Bool {
        (lhs.tx, lhs.id) < (rhs.tx, rhs.id)
    }

    public var description: String { "\(tx)/\(id)" }
}
