import OutboxCore
import OutboxStore

/// A worker's settings. The defaults here are the only ones: the command's options and
/// environment variables fall back to them.
public struct WorkerConfiguration: Sendable {
    /// Shown in `wa_outbox.workers` and logs.
    public var name: String
    /// Claimed jobs held in this process at most, and so dispatches in flight: a run of a chat's
    /// sends (`RunLimit`) holds all its jobs and sends them one at a time.
    public var concurrency = 512
    /// Jobs taken by one claim at most.
    public var batchSize = 500
    /// How long the jobs of a worker that stops heartbeating stay held; heartbeats come every third of it.
    public var lease: Duration = .seconds(30)
    /// The fallback poll, for when no notification arrives.
    public var pollInterval: Duration = .seconds(1)
    /// On SIGTERM, how long shutdown may take: in-flight dispatches get three quarters of it, then
    /// their jobs are handed back; writing the results gets the rest.
    public var gracePeriod: Duration = .seconds(10)
    /// Drain the queue, then return.
    public var exitWhenIdle = false
    /// How long completions gather before one statement writes them all, while they arrive busily
    /// (a lone completion is written at once).
    public var completionWindow: Duration = .milliseconds(2)
    public var retry = RetryPolicy()
    /// How long an engine call may take. With 5 s more, it is the dispatch lock's TTL and how long
    /// a request given up on may still land: a WAHA send that may have arrived is looked for only
    /// after that.
    public var requestTimeout: Duration = .seconds(30)
    /// How often this worker tries to prune (only one process prunes at a time); nil: never.
    public var pruneInterval: Duration? = .seconds(60)
    /// How often each session's engine is asked whether it is connected (shared by all workers).
    public var healthInterval: Duration = .seconds(10)
    public var retention = Retention()
    /// How long a starting worker keeps trying to reach PostgreSQL before it exits with the error.
    public var startPatience: Duration = .seconds(60)
    /// Fault injection for tests: called between the claim and what follows it.
    var afterClaim: (@Sendable () throws -> Void)?
    /// Fault injection for tests: true drops a claim's answer after its commit, as a connection
    /// broken at that moment would.
    var loseClaimAnswer: (@Sendable () -> Bool)?
    /// Fault injection for tests: called before `--exit-when-idle` asks whether work is pending.
    var beforePendingCheck: (@Sendable () throws -> Void)?

    public init(name: String) {
        self.name = name
    }

    /// Jobs admitted by one Redis script call, for engines inside the process.
    static let admissionChunk = 100
}
