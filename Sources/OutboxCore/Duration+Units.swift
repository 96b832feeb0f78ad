extension Duration {
    /// Whole milliseconds, for SQL intervals and Redis TTLs.
    public var milliseconds: Int64 { components.seconds * 1_000 + components.attoseconds / 1_000_000_000_000_000 }

    /// Seconds with fractions.
    public var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
