import CMallocTuning
import Foundation
import Testing

/// A process linking `CMallocTuning` (the executable does) keeps one malloc arena, however
/// many threads allocate. Before this test the cap was never compiled in (malloc_tuning.c), and a
/// draining worker kept nine arenas: 10.6 MB of anonymous memory at its peak against 7.7 MB with one.
@Suite("Malloc arenas")
struct MallocArenaTests {
    @Test func manyThreadsAllocatingShareOneArena() throws {
        #if canImport(Glibc)
        let environment = ProcessInfo.processInfo.environment
        guard environment["MALLOC_ARENA_MAX"] == nil, !(environment["GLIBC_TUNABLES"] ?? "").contains("glibc.malloc.arena_max") else { return }
        let threads = 16
        let done = DispatchGroup()
        let start = DispatchSemaphore(value: 0)
        let end = DispatchSemaphore(value: 0)
        for _ in 0..<threads {
            done.enter()
            // Threads of their own, all alive at once: glibc hands a new thread a new arena while
            // under its limit.
            Thread.detachNewThread {
                start.wait()
                var blocks: [UnsafeMutableRawPointer] = []
                for size in stride(from: 64, to: 64 * 200, by: 64) { blocks.append(malloc(size)!) }
                for block in blocks { free(block) }
                done.leave()
                end.wait()
            }
        }
        for _ in 0..<threads { start.signal() }
        done.wait()
        let arenas = wa_malloc_arena_count()
        for _ in 0..<threads { end.signal() }
        #expect(arenas == 1, "glibc made \(arenas) malloc arenas; the cap is one")
        #endif
    }
}
