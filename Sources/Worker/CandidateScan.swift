/// How many ready lanes a worker's claim scans to find the sessions it asks for.
///
/// The scan walks ready lanes of runnable sessions oldest first. Where sessions' ready chats are
/// interleaved, four lanes per session asked for find enough of them; where they lie together, as
/// a campaign's do (one session's thousands of chats enqueued at once), four lanes find one
/// session, and a session of one slot gives a claim ten jobs. So the scan widens (doubling, up to
/// `maxPerSession` lanes per session and `maxPerJob` per job of the claim's budget) while claims
/// find fewer than half the sessions they ask for, as long as the scan was cut short by its size
/// and the last widening found more. It narrows (halving, down to four) once claims find enough
/// sessions, once a scan sees every ready lane there is, or once widening stops helping (one
/// campaign alone: no width finds a second session).
struct CandidateScan {
    static let minPerSession = 4
    static let maxPerSession = 128
    static let maxPerJob = 10

    private(set) var perSession = minPerSession
    /// The sessions found before the last widening, while widening.
    private var foundBeforeWidening: Int?

    /// The lanes to scan for `sessions` sessions, in a claim of `budget` jobs at most.
    func lanes(sessions: Int, budget: Int) -> Int {
        max(Self.minPerSession, min(perSession * max(1, sessions), Self.maxPerJob * max(1, budget)))
    }

    /// After a claim that took jobs: its scan of `limit` lanes returned `scanned` and found `found`
    /// sessions; it asked for `asked`.
    mutating func found(_ found: Int, of asked: Int, scanned: Int, limit: Int) {
        let cutShort = scanned >= limit
        if found * 2 < asked, cutShort, foundBeforeWidening.map({ found > $0 }) ?? true {
            foundBeforeWidening = found
            perSession = min(perSession * 2, Self.maxPerSession)
        } else if found * 2 < asked, cutShort {
            // Widening found nothing more: step back, and try again from there later.
            foundBeforeWidening = nil
            perSession = max(perSession / 2, Self.minPerSession)
        } else if found >= asked || !cutShort {
            foundBeforeWidening = nil
            perSession = max(perSession / 2, Self.minPerSession)
        }
    }
}
