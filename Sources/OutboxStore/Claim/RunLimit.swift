/// How long a run of a chat's sends one claim may take (`ClaimQuery`).
///
/// A run is sent one job after another by one worker, and each send is still admitted on its own
/// (rate limit, pacing gap, budgets). So a run is only worth claiming where those let its sends go
/// back to back: never for a paced session (its next send waits a gap of seconds, so the rest of
/// the run would only be handed back), and never longer than the session's burst. The claim reads
/// the session's own `pacing` and `burst`, and these defaults where it sets none.
public struct RunLimit: Sendable, Equatable {
    /// Jobs in a run at most.
    public var length: Int
    /// The `pacing` of a session that sets none.
    public var pacedByDefault: Bool
    /// The `burst` of a session that sets none.
    public var defaultBurst: Int

    public init(length: Int, pacedByDefault: Bool, defaultBurst: Int) {
        self.length = length
        self.pacedByDefault = pacedByDefault
        self.defaultBurst = defaultBurst
    }

    /// One job per lane: what every claim did before runs.
    public static let single = RunLimit(length: 1, pacedByDefault: true, defaultBurst: 1)

    /// The longest run a worker claims.
    public static let longest = 10

    /// Runs for a worker that admits its sends with these limits; with none (no Redis: nothing is
    /// limited), the longest runs everywhere.
    public static func runs(pacedByDefault: Bool?, defaultBurst: Int?) -> RunLimit {
        RunLimit(length: longest, pacedByDefault: pacedByDefault ?? false, defaultBurst: defaultBurst ?? longest)
    }
}
