import ArgumentParser
import CMallocTuning
import Foundation

/// For the tests: starts threads that allocate while all are alive, and prints how many malloc
/// arenas this process then has. The executable caps them at one when it loads (CMallocTuning);
/// asking the executable itself proves the cap is linked in, which no library test can.
struct MallocArenasCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "malloc-arenas",
        abstract: "Print this process's malloc arena count after 16 threads allocate (for the tests).",
        shouldDisplay: false
    )

    func run() {
        let threads = 16
        let allocated = DispatchGroup()
        let start = DispatchSemaphore(value: 0)
        let end = DispatchSemaphore(value: 0)
        for _ in 0..<threads {
            allocated.enter()
            // All alive at once: glibc hands a new thread a new arena while under its limit.
            Thread.detachNewThread {
                start.wait()
                var blocks: [UnsafeMutableRawPointer] = []
                for size in stride(from: 64, to: 64 * 200, by: 64) { blocks.append(malloc(size)!) }
                for block in blocks { free(block) }
                allocated.leave()
                end.wait()
            }
        }
        for _ in 0..<threads { start.signal() }
        allocated.wait()
        print(wa_malloc_arena_count())
        for _ in 0..<threads { end.signal() }
    }
}
