/// A server backend: what a claim whose answer was lost is settled against.
public struct PostgresBackend: Sendable, Equatable {
    public var pid: Int32
    public var startedMicroseconds: Int64

    public init(pid: Int32, startedMicroseconds: Int64) {
        self.pid = pid
        self.startedMicroseconds = startedMicroseconds
    }

    /// No backend: for a claim known to have committed.
    public static let none = PostgresBackend(pid: 0, startedMicroseconds: 0)
}
