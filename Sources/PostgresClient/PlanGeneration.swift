import Synchronization

/// The plans of a set of connections (a pool's): once renewed, each connection drops its cached
/// plans before its next statement, so the statements after it are planned with the tables as they
/// are then. Remaking a plan costs its next execution a millisecond or more (the claim's), so it is
/// renewed when the tables changed enough to matter, not on a timer: at 200 jobs/s, remaking every
/// connection's plans each second made a few jobs 2 to 11 ms late at one point of each second per
/// connection (BENCHMARKS.md).
public final class PlanGeneration: Sendable {
    private let generation = Atomic<Int>(0)

    public init() {}

    public func renew() {
        generation.add(1, ordering: .relaxed)
    }

    var current: Int { generation.load(ordering: .relaxed) }
}
