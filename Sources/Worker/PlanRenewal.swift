/// When the worker's connections remake their plans: when the jobs table has grown to more than
/// four times the size it had when they last did (each claim reports the size). A generic plan
/// made on a near-empty table scans the jobs where it should probe them; one made on a table a
/// quarter of today's size or more probes alike. A table that shrank (pruned, then truncated by
/// vacuum) lowers the mark, so that plans a new connection makes on it are renewed as it grows.
/// In a steady state nothing is remade: remaking costs the next claim a millisecond or more.
struct PlanRenewal {
    /// The size the plans are known to have been made at or above; a worker that starts assumes
    /// an empty table.
    private(set) var blocksAtRenewal: Int64 = 0

    /// Takes one claim's report; true if the worker's connections must remake their plans.
    mutating func observe(jobsTableBlocks blocks: Int64) -> Bool {
        if blocks > 4 * blocksAtRenewal {
            blocksAtRenewal = blocks
            return true
        }
        blocksAtRenewal = min(blocksAtRenewal, blocks)
        return false
    }
}
