import CLibPQ

#if canImport(Glibc)
import Glibc
#endif

/// LISTEN and the wait for notifications, on the connection's own thread.
extension PostgresConnection {
    /// Subscribes this connection to `channel`. Channel names are identifiers, so they are checked
    /// against a strict pattern rather than bound as parameters.
    public func listen(_ channel: String) throws {
        guard Self.isPlainIdentifier(channel) else {
            throw PostgresError(kind: .server, message: "invalid channel name \(channel)")
        }
        try execute("LISTEN \(channel)")
    }

    /// Blocks this connection's thread until a notification arrives, `wakeFD` becomes readable,
    /// or `timeoutMilliseconds` pass; returns the notifications received (possibly none).
    ///
    /// It sleeps in `poll(2)` on the connection's socket: no busy polling.
    func waitForNotifications(wakeFD: Int32, timeoutMilliseconds: Int32) throws -> [PostgresNotification] {
        let conn = try liveHandle()
        var received = try drainNotifications(conn)
        if !received.isEmpty { return received }
        var fds = [
            pollfd(fd: PQsocket(conn), events: Int16(POLLIN), revents: 0),
            pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0),
        ]
        let ready = poll(&fds, 2, timeoutMilliseconds)
        if ready < 0 && errno != EINTR {
            throw PostgresError(kind: .connection, message: "poll failed: errno \(errno)")
        }
        if fds[0].revents != 0 {
            received = try drainNotifications(conn)
        }
        return received
    }

    /// Runs `SELECT 1` and waits at most `timeoutMilliseconds` for its answer; past that the
    /// connection is marked broken and this throws. A peer that stops answering without closing
    /// (a stuck proxy acknowledges every byte, so TCP keepalives and the user timeout never fire)
    /// would otherwise hold a blocking query forever. Notifications that arrive meanwhile stay
    /// queued in libpq for the next `waitForNotifications`.
    func ping(timeoutMilliseconds: Int32) throws {
        let conn = try liveHandle()
        guard PQsendQuery(conn, "SELECT 1") == 1 else { throw connectionError(conn) }
        let deadline = ContinuousClock.now + .milliseconds(Int(timeoutMilliseconds))
        var flushed = false
        while true {
            if !flushed {
                let flush = PQflush(conn)
                guard flush >= 0 else { throw connectionError(conn) }
                flushed = flush == 0
            }
            guard PQconsumeInput(conn) == 1 else { throw connectionError(conn) }
            if flushed && PQisBusy(conn) == 0 { break }
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else {
                markBroken()
                throw PostgresError(kind: .connection, message: "the server did not answer within \(timeoutMilliseconds) ms")
            }
            var fd = pollfd(fd: PQsocket(conn), events: Int16(flushed ? POLLIN : POLLIN | POLLOUT), revents: 0)
            let (seconds, attoseconds) = remaining.components
            let wait = Int32(min(Int64(timeoutMilliseconds), seconds * 1000 + attoseconds / 1_000_000_000_000_000 + 1))
            if poll(&fd, 1, wait) < 0 && errno != EINTR {
                throw PostgresError(kind: .connection, message: "poll failed: errno \(errno)")
            }
        }
        var failure: PostgresError?
        while let result = PQgetResult(conn) {
            if PQresultStatus(result) != PGRES_TUPLES_OK { failure = failure ?? PostgresError(kind: .server, message: Self.trim(String(cString: PQresultErrorMessage(result)))) }
            PQclear(result)
        }
        if let failure { throw failure }
    }

    private func drainNotifications(_ conn: OpaquePointer) throws -> [PostgresNotification] {
        guard PQconsumeInput(conn) == 1 else {
            markBroken()
            throw PostgresError(kind: .connection, message: Self.trim(String(cString: PQerrorMessage(conn))))
        }
        var received: [PostgresNotification] = []
        while let notify = PQnotifies(conn) {
            received.append(PostgresNotification(
                channel: String(cString: notify.pointee.relname),
                payload: String(cString: notify.pointee.extra),
                backendPID: notify.pointee.be_pid
            ))
            PQfreemem(notify)
        }
        return received
    }
}
