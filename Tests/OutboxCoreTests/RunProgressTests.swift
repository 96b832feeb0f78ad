import OutboxCore
import Testing

/// What the rest of a run does after each of its jobs (`RunProgress`, `Outcome.holdsRun`): a chat
/// that must run again stops alone; a wait of the whole session, a job the worker lost (shutdown,
/// lease) or a hand-back stops everything after it.
@Suite("A run's progress")
struct RunProgressTests {
    @Test func aRetryStopsItsChatAndTheOtherChatsGoOn() {
        var progress = RunProgress()
        let retry = Outcome.retry(after: .seconds(2), code: .engineError, message: "503 Service Unavailable")
        let goesOn = progress.note(retry, chat: "a")
        #expect(goesOn)
        #expect(progress.stopped("a") == retry)
        #expect(progress.stopped("b") == nil)
        let afterSent = progress.note(.succeeded, chat: "b"), afterFailed = progress.note(.failed(code: .invalidRecipient, message: "not on WhatsApp"), chat: "c")
        #expect(afterSent && afterFailed)
        #expect(progress.stopped("b") == nil && progress.stopped("c") == nil)
    }

    @Test func aWaitOfTheSessionALostJobOrAHandBackStopsTheWholeRest() {
        for code in [ErrorCode.rateLimited, .sessionUnavailable, .accountRestricted, .workerLost] {
            var progress = RunProgress()
            let goesOn = progress.note(.defer_(after: .seconds(1), code: code, message: "m"), chat: "a")
            #expect(!goesOn, "\(code)")
        }
        var progress = RunProgress()
        let afterHandBack = progress.note(nil, chat: "a")
        #expect(!afterHandBack)
        let afterLock = progress.note(.defer_(after: .zero, code: .dispatchInProgress, message: "another process holds its lock"), chat: "a")
        #expect(afterLock)
    }
}
