/// How many ready lanes a worker's claim scans to find the sessions it asks for.
///
/// The scan walks ready lanes oldest first. Where sessions' ready chats are interleaved, four lanes
/// per session asked for find enough of them; where they lie together, as a campaign's do (one
/// session's thousands of chats enqueued at once), four lanes find one session, and a session of
/// one slot gives a claim ten jobs. So the scan widens (doubling, up to `maxPerSession` lanes per
/// session and `maxPerJob` per job of the claim's budget) while claims find fewer than half the
/// sessions they ask for, and narrows again (halving, down to four) once they find enough.
struct CandidateScan {
    static let minPerSession = 4
    static let maxPerSession = 128
    static let maxPerJob = 10

    private(set) var perSession = minPerSession

    /// The lanes to scan for `sessions` sessions, in a claim of `budget` jobs at most.
    func lanes(sessions: Int, budget: Int) -> Int {
        max(Self.minPerSession, min(perSession * max(1, sessions), Self.maxPerJob * max(1, budget)))
    }

    /// After a claim that took jobs: its scan found `found` sessions, it asked for `asked`.
    mutating func found(_ found: Int, of asked: Int) {
        if found * 2 < asked {
            perSession = min(perSession * 2, Self.maxPerSession)
        } else if found >= asked {
            perSession = max(perSession / 2, Self.minPerSession)
        }
    }
}
