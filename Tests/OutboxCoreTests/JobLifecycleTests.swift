import OutboxCore
import Testing

/// The job's life inside a worker, without I/O: every path ends with exactly one completion.
@Suite("Job lifecycle")
struct JobLifecycleTests {
    @Test func aDispatchedJobBuffersItsResultOnce() {
        var life = JobLifecycle()
        let r2 = life.start()
        #expect(r2)
        let r3 = life.finish(.succeeded)
        #expect(r3 == .succeeded)
        let r4 = life.finish(.succeeded)
        #expect(r4 == nil, "a second result must not be buffered")
        let r5 = life.handBack(reason: "late")
        #expect(r5 == nil, "a hand-back must not hide a buffered result")
        let r6 = life.start()
        #expect(!r6, "a finished job must not be dispatched again")
    }

    @Test func aJobHandedBackBeforeItsEngineCallIsNotMarkedMaybeSent() {
        var life = JobLifecycle()
        guard case .defer_(.zero, let code, _) = life.handBack(reason: "shutdown") else {
            Issue.record("a hand-back must defer without spending an attempt")
            return
        }
        #expect(code == .engineError)
        let started = life.start()
        #expect(!started, "a job handed back must never reach its engine")
        let buffered = life.finish(.succeeded)
        #expect(buffered == nil)
    }

    @Test func aJobHandedBackDuringItsEngineCallIsMarkedMaybeSent() {
        var life = JobLifecycle()
        let r10 = life.start()
        #expect(r10)
        guard case .defer_(.zero, .workerLost, _) = life.handBack(reason: "lease lapsed") else {
            Issue.record("a hand-back mid-call must say the message may have gone out (worker_lost)")
            return
        }
        let r11 = life.finish(.succeeded)
        #expect(r11 == nil, "the result after a hand-back is dropped: the job may be another worker's")
    }

}
