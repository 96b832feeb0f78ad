import CMallocTuning
import Foundation
import Testing

/// A process linking `CMallocTuning` (the executable does) keeps one malloc arena, however
/// many threads allocate. Before this test the cap was never compiled in (malloc_tuning.c), and a
/// draining worker kept nine arenas: 10.6 MB of anonymous memory at its peak against 7.7 MB with one.
@Suite("Malloc arenas")
struct MallocArenaTests {
    @Test func manyThreadsAllocatingShareOneArena() async throws {
        #if canImport(Glibc)
        let environment = ProcessInfo.processInfo.environment
        guard environment["MALLOC_ARENA_MAX"] == nil, !(environment["GLIBC_TUNABLES"] ?? "").contains("glibc.malloc.arena_max") else { return }
        // The threads are started and waited for from a thread of their own: blocking waits on the
        // cooperative pool would hold one of its two threads from every other test meanwhile.
        let arenas = await withCheckedContinuation { (answer: CheckedContinuation<Int32, Never>) in
            Thread.detachNewThread { answer.resume(returning: Self.arenasAfterThreadsAllocate(16)) }
        }
        #expect(arenas == 1, "glibc made \(arenas) malloc arenas; the cap is one")
        #endif
    }

    /// Starts `count` threads that allocate while all are alive (glibc hands a new thread a new
    /// arena while under its limit), counts the arenas, then lets them end.
    static func arenasAfterThreadsAllocate(_ count: Int) -> Int32 {
        let allocated = DispatchGroup()
        let start = DispatchSemaphore(value: 0)
        let end = DispatchSemaphore(value: 0)
        for _ in 0..<count {
            allocated.enter()
            Thread.detachNewThread {
                start.wait()
                var blocks: [UnsafeMutableRawPointer] = []
                for size in stride(from: 64, to: 64 * 200, by: 64) { blocks.append(malloc(size)!) }
                for block in blocks { free(block) }
                allocated.leave()
                end.wait()
            }
        }
        for _ in 0..<count { start.signal() }
        allocated.wait()
        let arenas = wa_malloc_arena_count()
        for _ in 0..<count { end.signal() }
        return arenas
    }
}
