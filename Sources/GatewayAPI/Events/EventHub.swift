import HTTPSurface
import HTTPTypes
import Logging
import OutboxCore
import OutboxStore
import PostgresClient
import ServiceLifecycle
import Synchronization

/// The API process's one reader of the event log, fanned out to its event streams and to the
/// synchronous requests waiting for their job's final event.
///
/// One `LISTEN wa_outbox_events` per process; each notification (coalesced while a read is under
/// way) and each `pollInterval` (a lost notification) leads to ONE `EventLog.after(cursor, org: nil)`
/// read, advancing the process-wide cursor, whatever the number of clients. Each event goes to the
/// subscriptions of its organization (each a bounded buffer that ends on overflow, so a slow client
/// never holds back the hub or the others) and to the waiters for its job. With no stream open the
/// log is not read at all (waiters are answered by their job's id); the next stream starts from
/// the log's head, read when it subscribes.
///
/// Run it as a `Service` in the API's ServiceGroup, after the HTTP server: a graceful shutdown
/// reaches it first, and it then ends every stream so the server can drain its connections.
public final class EventHub: Service, JobEvents, Sendable {
    public struct Configuration: Sendable {
        /// How often the log is read when no notification arrives (a lost NOTIFY costs at most this).
        public var pollInterval: Duration = .seconds(1)
        /// How often each stream gets a `: keep-alive` comment.
        public var keepAliveInterval: Duration = .seconds(15)
        /// How many undelivered events a stream may fall behind before it is ended.
        public var subscriberBuffer: Int = 1024
        /// Events per read of the log.
        public var batchSize: Int = 500

        public init() {}
    }

    private struct Waiter {
        var org: String
        var continuation: AsyncStream<StatusEvent>.Continuation
    }

    private struct State {
        /// The last event fanned out; nil until `run()` has read where the log ends.
        var cursor: EventCursor?
        /// Set when a wake-up found no stream and skipped the read: `cursor` is behind the log.
        var behind = false
        var stopped = false
        var nextID: UInt64 = 0
        var subscribers: [String: [UInt64: Subscription]] = [:]
        var waiters: [Int64: [UInt64: Waiter]] = [:]
    }

    let database: PostgresDatabase
    private let listenerConfiguration: PostgresConfiguration
    let configuration: Configuration
    private let logger: Logger
    private let state = Mutex(State())
    /// Wake-ups of the reader, coalesced: any number of notifications during a read cause one more.
    private let wakeups: AsyncStream<Void>
    private let wake: AsyncStream<Void>.Continuation

    public init(database: PostgresDatabase, listenerConfiguration: PostgresConfiguration, configuration: Configuration = Configuration(), logger: Logger) {
        self.database = database
        self.listenerConfiguration = listenerConfiguration
        self.configuration = configuration
        self.logger = logger
        (wakeups, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// The open streams of this process.
    public var subscriberCount: Int { state.withLock { $0.subscribers.values.reduce(0) { $0 + $1.count } } }

    /// Reads and fans out until cancelled or a graceful shutdown; then ends every stream and wait.
    public func run() async throws {
        defer { stop() }
        await cancelWhenGracefulShutdown {
            guard let head = await self.startingCursor() else { return }
            self.state.withLock { $0.cursor = head }
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.listen() }
                group.addTask { await self.tick(every: self.configuration.pollInterval) { self.wake.yield() } }
                group.addTask { await self.tick(every: self.configuration.keepAliveInterval) { self.keepAlive() } }
                for await _ in self.wakeups {
                    let streaming = self.state.withLock { state in
                        if state.subscribers.isEmpty { state.behind = true }
                        return !state.subscribers.isEmpty
                    }
                    if streaming { await self.readAvailable() }
                    await self.answerWaiters()
                }
                group.cancelAll()
            }
        }
    }

    // MARK: Streams

    /// A new stream of `org`'s events. With `resume` (where the client is: `cursor(afterID:org:)`),
    /// the events after it up to `replayThrough` are the caller's to read from the log (`history`);
    /// live events after them arrive in the subscription, so nothing is missed or repeated.
    public func subscribe(org: String, filter: EventFilter, resume: EventCursor?) async throws -> (subscription: Subscription, replayThrough: EventCursor) {
        for _ in 0..<500 {
            // Behind (no stream was open): the head first; it becomes the cursor in the same
            // critical section that registers the stream, so the hub reads on from there.
            let head = state.withLock({ $0.behind }) ? try await EventLog.head(in: database) : nil
            let registered = try state.withLock { state -> (Subscription, EventCursor)? in
                if state.stopped { throw APIError(.serviceUnavailable, .internalError, "the event stream is shutting down; reconnect") }
                if state.behind {
                    guard let head else { return nil }
                    state.cursor = max(state.cursor ?? head, head)
                    state.behind = false
                }
                guard let cursor = state.cursor else { return nil }
                state.nextID += 1
                let subscription = Subscription(id: state.nextID, org: org, filter: filter, capacity: configuration.subscriberBuffer,
                                                skipThrough: max(resume ?? cursor, cursor))
                state.subscribers[org, default: [:]][subscription.id] = subscription
                return (subscription, cursor)
            }
            if let registered { return registered }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw APIError(.serviceUnavailable, .internalError, "the event stream is not ready yet; reconnect")
    }

    /// Ends a stream and forgets it.
    public func unsubscribe(_ subscription: Subscription) {
        subscription.finish(.closed)
        state.withLock { state in
            state.subscribers[subscription.org]?[subscription.id] = nil
            if state.subscribers[subscription.org]?.isEmpty == true { state.subscribers[subscription.org] = nil }
        }
    }

    /// Where a client that last had event `id` of `org` resumes (its `Last-Event-ID`).
    public func cursor(afterID id: Int64, org: String) async throws -> EventCursor {
        try await EventLog.cursor(afterID: id, org: org, in: database)
    }

    /// One page of `org`'s events after `cursor` and up to `through`, for a stream's replay.
    public func history(org: String, after cursor: EventCursor, through: EventCursor) async throws -> [StatusEvent] {
        try await EventLog.after(cursor, org: org, limit: configuration.batchSize, in: database).filter { $0.cursor <= through }
    }

    // MARK: Job waiters

    public func final(org: String, jobID: Int64, until deadline: ContinuousClock.Instant) async -> StatusEvent? {
        let (events, continuation) = AsyncStream.makeStream(of: StatusEvent.self, bufferingPolicy: .bufferingNewest(1))
        // Registered once the hub knows its cursor: every event after it reaches the waiter, every
        // one up to it is committed and in the log for the check below.
        var key: UInt64?
        while key == nil, ContinuousClock.now < deadline, !Task.isCancelled {
            key = state.withLock { state -> UInt64? in
                guard !state.stopped, state.cursor != nil else { return nil }
                state.nextID += 1
                state.waiters[jobID, default: [:]][state.nextID] = Waiter(org: org, continuation: continuation)
                return state.nextID
            }
            if key == nil, state.withLock({ $0.stopped }) { break }
            if key == nil { try? await Task.sleep(for: .milliseconds(20)) }
        }
        defer {
            if let key {
                state.withLock { state in
                    state.waiters[jobID]?[key] = nil
                    if state.waiters[jobID]?.isEmpty == true { state.waiters[jobID] = nil }
                }
            }
        }
        // Once subscribed, the log: an event that committed before the subscription (between the
        // enqueue and now) is there; one that commits later reaches the subscription.
        do {
            if let event = try await EventLog.final(jobID: jobID, org: org, in: database) { return event }
        } catch {
            logger.warning("cannot read a job's events; waiting for the stream", metadata: ["job": "\(jobID)", "error": "\(error)"])
        }
        guard key != nil else { return nil }
        return await withTaskGroup(of: StatusEvent?.self) { group in
            group.addTask {
                for await event in events { return event }
                return nil
            }
            group.addTask {
                try? await Task.sleep(until: deadline, clock: .continuous)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    // MARK: Reading

    private func startingCursor() async -> EventCursor? {
        var backoff = Duration.milliseconds(100)
        while !Task.isCancelled {
            do {
                return try await EventLog.head(in: database)
            } catch {
                logger.warning("cannot read the event log; retrying", metadata: ["error": "\(error)", "retry_in": "\(backoff)"])
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(5))
            }
        }
        return nil
    }

    private func listen() async {
        let listener = PostgresListener(configuration: listenerConfiguration, channels: ["wa_outbox_events"], logger: logger)
        // `.subscribed` (again, after a reconnect) and every notification: read the log.
        for await _ in listener.events() { wake.yield() }
    }

    private func tick(every interval: Duration, _ action: @Sendable () -> Void) async {
        while (try? await Task.sleep(for: interval)) != nil { action() }
    }

    /// Reads the log from the process cursor until it is exhausted, fanning out each page.
    private func readAvailable() async {
        while !Task.isCancelled, let cursor = state.withLock({ $0.cursor }) {
            let events: [StatusEvent]
            do {
                events = try await EventLog.after(cursor, org: nil, limit: configuration.batchSize, in: database)
            } catch {
                logger.warning("cannot read the event log; the next poll retries", metadata: ["error": "\(error)"])
                return
            }
            guard let last = events.last else { return }
            fanOut(events, through: last.cursor)
            if events.count < configuration.batchSize { return }
        }
    }

    private func fanOut(_ events: [StatusEvent], through last: EventCursor) {
        let byOrg = Dictionary(grouping: events, by: \.org)
        state.withLock { state in
            state.cursor = last
            for (org, batch) in byOrg {
                guard let subscribers = state.subscribers[org] else { continue }
                for (id, subscription) in subscribers where !subscription.offer(batch) {
                    state.subscribers[org]?[id] = nil
                    logger.info("event stream fell behind; ended", metadata: ["org": "\(org)", "buffer": "\(configuration.subscriberBuffer)"])
                }
            }
            deliver(events, toWaitersIn: &state)
        }
    }

    /// Looks up the final events of the jobs that requests wait for, by job id. The ordered read
    /// waits for every older write transaction in the cluster to end (a bulk enqueue can take
    /// seconds); a waiting request does not: its job's event answers it once committed.
    private func answerWaiters() async {
        let jobs = state.withLock { state in
            state.waiters.flatMap { jobID, waiters in Set(waiters.values.map(\.org)).map { (id: jobID, org: $0) } }
        }
        guard !jobs.isEmpty else { return }
        do {
            let events = try await EventLog.finals(of: jobs, in: database)
            state.withLock { deliver(events, toWaitersIn: &$0) }
        } catch {
            logger.warning("cannot read the final events of waiting requests; the next poll retries", metadata: ["error": "\(error)"])
        }
    }

    private func deliver(_ events: [StatusEvent], toWaitersIn state: inout State) {
        guard !state.waiters.isEmpty else { return }
        for event in events where StatusEvent.finalStatuses.contains(event.status) {
            guard let outboxID = Int64(event.outboxId), let waiters = state.waiters[outboxID] else { continue }
            for (key, waiter) in waiters where waiter.org == event.org {
                waiter.continuation.yield(event)
                state.waiters[outboxID]?[key] = nil
            }
            if state.waiters[outboxID]?.isEmpty == true { state.waiters[outboxID] = nil }
        }
    }

    private func keepAlive() {
        let all = state.withLock { $0.subscribers.values.flatMap(\.values) }
        for subscription in all { subscription.tick() }
    }

    /// Ends every stream and waiter; later subscriptions are refused.
    private func stop() {
        let (subscriptions, waiters) = state.withLock { state in
            state.stopped = true
            defer {
                state.subscribers = [:]
                state.waiters = [:]
            }
            return (state.subscribers.values.flatMap(\.values), state.waiters.values.flatMap(\.values))
        }
        for subscription in subscriptions { subscription.finish(.shutdown) }
        for waiter in waiters { waiter.continuation.finish() }
        wake.finish()
    }
}
