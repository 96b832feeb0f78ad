import Logging
import PostgresClient
import Synchronization

/// Sends the outbox's wake-up NOTIFYs for writers that commit silently
/// (`wa_outbox.notify = 'after_commit'`, migration 0016), each in a transaction of its own.
///
/// Guarantee: every `signal()` is followed by a NOTIFY that starts after it, so a listener wakes
/// after the commit that signalled. Signals that arrive while a NOTIFY is under way share the next
/// one, so a thousand commits a second cost a handful of NOTIFYs. A NOTIFY that fails is dropped:
/// listeners poll as well.
public final class WakeupNotifier: Sendable {
    public static let jobs = "wa_outbox_jobs"
    public static let events = "wa_outbox_events"

    private struct State {
        var sending = false
        var again = false
    }

    private let database: PostgresDatabase
    private let statement: String
    private let logger: Logger
    private let state = Mutex(State())

    /// Notifies `channels` (a subset of `jobs` and `events`) on each signal.
    public init(database: PostgresDatabase, channels: [String], logger: Logger) {
        precondition(!channels.isEmpty && channels.allSatisfy { [Self.jobs, Self.events].contains($0) }, "unknown channel")
        self.database = database
        self.statement = "SELECT " + channels.map { "pg_notify('\($0)', '')" }.joined(separator: ", ")
        self.logger = logger
    }

    /// After a silent commit: wakes the listeners.
    public func signal() {
        let start = state.withLock { state in
            if state.sending {
                state.again = true
                return false
            }
            state.sending = true
            return true
        }
        if start { Task { await self.send() } }
    }

    private func send() async {
        repeat {
            do {
                try await database.query(PostgresQuery(statement))
            } catch {
                logger.debug("a wake-up NOTIFY failed; listeners poll", metadata: ["error": "\(error)"])
            }
        } while state.withLock { state in
            if state.again {
                state.again = false
                return true
            }
            state.sending = false
            return false
        }
    }
}
