import Foundation
import Testing
import TestSupport

/// The `wa-outbox` executable keeps one malloc arena, however many threads allocate (CMallocTuning
/// sets the cap when the binary loads). Before this test the cap was never compiled in
/// (malloc_tuning.c), and a draining worker kept nine arenas: 10.6 MB of anonymous memory at its
/// peak against 7.7 MB with one. Asked of the executable itself, in a process of its own.
@Suite("Malloc arenas")
struct MallocArenaTests {
    @Test func theExecutableKeepsOneArenaHoweverManyThreadsAllocate() async throws {
        var environment = ProcessInfo.processInfo.environment
        environment["MALLOC_ARENA_MAX"] = nil
        environment["GLIBC_TUNABLES"] = nil
        let run = try await Subprocess.run(try TestEnvironment.executable(), ["malloc-arenas"], environment: environment)
        #expect(run.status == 0)
        #expect(run.output.trimmingCharacters(in: .whitespacesAndNewlines) == "1", "malloc arenas after 16 threads allocate: \(run.output)")
    }

    @Test func anOperatorsArenaSettingWins() async throws {
        var environment = ProcessInfo.processInfo.environment
        environment["MALLOC_ARENA_MAX"] = "4"
        let run = try await Subprocess.run(try TestEnvironment.executable(), ["malloc-arenas"], environment: environment)
        #expect(Int(run.output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0 > 1, "with MALLOC_ARENA_MAX=4: \(run.output)")
    }
}
