import CLibPQ

extension PostgresQuery {
    public static let begin = PostgresQuery("BEGIN", binds: [])
    public static let commit = PostgresQuery("COMMIT", binds: [])
    /// For the rest of the transaction, prepared statements run their generic plan: planned once
    /// per connection (and again after `renewPlans()`), not on every execution.
    public static let genericPlans = PostgresQuery("SET LOCAL plan_cache_mode = force_generic_plan", binds: [])
}

extension PostgresConnection {
    /// Runs `queries` in one network round trip (libpq's pipeline mode): all are sent, then one
    /// Sync, and their results are read in order. Each is prepared on first use, beforehand.
    ///
    /// A statement that fails makes the server skip the ones after it, and its error is thrown.
    /// Between `.begin` and `.commit`, such a failure leaves the transaction block open and failed:
    /// the caller rolls it back. A connection whose pipeline cannot be ended cleanly is marked broken.
    public func pipeline(_ queries: [PostgresQuery]) throws -> [PostgresRows] {
        let conn = try liveHandle()
        try discardStalePlans(conn)
        var names: [String] = []
        for query in queries {
            guard let name = try preparedName(query, conn) else {
                throw PostgresError(kind: .server, message: "too many prepared statements on this connection for a pipeline")
            }
            names.append(name)
        }
        guard PQenterPipelineMode(conn) == 1 else { throw connectionError(conn) }
        defer { endPipeline(conn) }
        for (query, name) in zip(queries, names) {
            let sent = withParameters(query.binds) { count, values, lengths, formats in
                PQsendQueryPrepared(conn, name, count, values, lengths, formats, 1)
            }
            guard sent == 1 else { throw connectionError(conn) }
        }
        guard PQpipelineSync(conn) == 1 else { throw connectionError(conn) }
        var rows: [PostgresRows] = []
        var failure: (any Error)?
        for _ in queries {
            guard let result = PQgetResult(conn) else { throw connectionError(conn) }
            if PQresultStatus(result) == PGRES_PIPELINE_ABORTED {
                PQclear(result)
            } else {
                do { rows.append(try consume(result, conn)) } catch { failure = failure ?? error }
            }
            // Each statement's results end with a null one.
            if let extra = PQgetResult(conn) {
                PQclear(extra)
                markBroken()
                throw PostgresError(kind: .connection, message: "a pipelined statement answered more than one result")
            }
        }
        guard let sync = PQgetResult(conn) else { throw connectionError(conn) }
        let synced = PQresultStatus(sync) == PGRES_PIPELINE_SYNC
        PQclear(sync)
        if let failure { throw failure }
        guard synced else {
            markBroken()
            throw PostgresError(kind: .connection, message: "the pipeline ended without its Sync")
        }
        return rows
    }

    /// Runs `query` in a transaction of its own that runs its generic plan (`.genericPlans`): the
    /// `BEGIN`, the statement and the `COMMIT` in one round trip, as one autocommit statement
    /// would take. Inside a transaction the caller opened, it runs as `query(_:)` does.
    @discardableResult
    public nonisolated func queryGenericPlan(_ query: PostgresQuery) async throws -> PostgresRows {
        let ownTransaction = isReusable
        do {
            return try await runGenericPlan(query)
        } catch {
            if ownTransaction && !isReusable && !isBroken { try? await execute("ROLLBACK") }
            throw error
        }
    }

    /// `queryGenericPlan`'s statements, in one call on the connection's thread. A connection inside
    /// a transaction, or holding as many prepared statements as it may, runs `query` as it is.
    private func runGenericPlan(_ query: PostgresQuery) throws -> PostgresRows {
        let statements: [PostgresQuery] = [.begin, .genericPlans, query, .commit]
        let missing = Set(statements.map(StatementKey.init)).subtracting(preparedStatements.keys)
        guard isReusable, preparedStatements.count + missing.count <= Self.maxPreparedStatements else { return try self.query(query) }
        return try pipeline(statements)[2]
    }

    /// Leaves pipeline mode; a connection that cannot (results left unread) is of no further use.
    private func endPipeline(_ conn: OpaquePointer) {
        if PQexitPipelineMode(conn) != 1 { markBroken() }
        noteTransactionState(conn)
    }
}
