/// How fast one session may send. Every process that dispatches for the session shares these
/// limits through Redis.
public struct SessionLimits: Sendable, Equatable {
    /// Sustained sends per second (GCRA emission rate).
    public var ratePerSecond: Double
    /// Sends allowed at once after a quiet period.
    public var burst: Int
    /// Anti-ban pacing: a random gap in [minGap, maxGap] between two dispatches.
    public var pacing: Bool
    public var minGapMilliseconds: Int
    public var maxGapMilliseconds: Int
    /// Sends per clock hour / UTC day; nil: unlimited.
    public var hourlyBudget: Int?
    public var dailyBudget: Int?

    public init(ratePerSecond: Double = 1, burst: Int = 5, pacing: Bool = true, minGapMilliseconds: Int = 1_500,
                maxGapMilliseconds: Int = 5_000, hourlyBudget: Int? = nil, dailyBudget: Int? = nil) {
        self.ratePerSecond = ratePerSecond
        self.burst = burst
        self.pacing = pacing
        self.minGapMilliseconds = minGapMilliseconds
        self.maxGapMilliseconds = maxGapMilliseconds
        self.hourlyBudget = hourlyBudget
        self.dailyBudget = dailyBudget
    }

    /// The gap to keep before the next dispatch, drawn fresh each time (0: no pacing).
    func nextGapMilliseconds() -> Int {
        guard pacing, maxGapMilliseconds > 0 else { return 0 }
        let low = min(minGapMilliseconds, maxGapMilliseconds)
        return Int.random(in: low...maxGapMilliseconds)
    }

}
