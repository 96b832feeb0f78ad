import Coordination
import OutboxStore

extension SessionRecord {
    /// The session's own limits where it sets them, `defaults` elsewhere.
    public func limits(over defaults: SessionLimits) -> SessionLimits {
        var limits = defaults
        limits.ratePerSecond = ratePerSecond ?? limits.ratePerSecond
        limits.burst = burst ?? limits.burst
        limits.pacing = pacing ?? limits.pacing
        limits.minGapMilliseconds = minGapMilliseconds ?? limits.minGapMilliseconds
        limits.maxGapMilliseconds = maxGapMilliseconds ?? limits.maxGapMilliseconds
        limits.hourlyBudget = hourlyBudget ?? limits.hourlyBudget
        limits.dailyBudget = dailyBudget ?? limits.dailyBudget
        return limits
    }
}
