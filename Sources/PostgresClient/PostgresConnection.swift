import CLibPQ
import Foundation
import ConnectionKit
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A notification received on a LISTEN channel.
public struct PostgresNotification: Sendable, Equatable {
    public var channel: String
    public var payload: String
    public var backendPID: Int32
}

/// One libpq connection, confined to its own thread.
///
/// The actor's executor is a `DedicatedThread`, so every libpq call (each of which blocks for a
/// network round trip) runs there and never on Swift's cooperative pool. The actor admits one call
/// at a time, and the isolated methods never suspend, so a statement is never interleaved with
/// another on the same connection.
///
/// Statements sent with parameters are prepared once per connection and then executed by name.
/// Results are requested in binary format. Their plans are remade (`DISCARD PLANS` before the next
/// statement) when their `PlanGeneration` is renewed: a generic plan is made with the tables as
/// they are, and one kept for the connection's life, made while the queue was empty, went on
/// scanning every job once a backlog came (`StalePlanTests`). The caller that sees the tables grow
/// says when.
public actor PostgresConnection: PooledConnection {
    private let thread: DedicatedThread
    private var handle: OpaquePointer?
    private let broken = Atomic<Bool>(false)
    private let inTransaction = Atomic<Bool>(false)
    private let pid = Atomic<Int32>(0)
    private let started = Atomic<Int64>(0)
    private let logger: Logger
    private let notices: NoticeSink
    var preparedStatements: [StatementKey: String] = [:]
    static let maxPreparedStatements = 256
    /// The generation this connection's plans belong to (its pool's), and the one they were made in.
    private let plans: PlanGeneration?
    private var plansMadeIn: Int
    private let renewals = Atomic<Int>(0)

    struct StatementKey: Hashable {
        var sql: String
        var types: [UInt32]

        init(_ query: PostgresQuery) {
            sql = query.sql
            types = query.binds.map(\.type.rawValue)
        }
    }

    public nonisolated var unownedExecutor: UnownedSerialExecutor { thread.executor }

    /// The server backend serving this connection, as the server names it (asked at connect, since
    /// behind PgBouncer libpq's `PQbackendPID` is PgBouncer's own number): its process id and its
    /// `backend_start` in microseconds since 1970, which a reused process id does not share.
    public nonisolated var backend: PostgresBackend {
        PostgresBackend(pid: pid.load(ordering: .relaxed), startedMicroseconds: started.load(ordering: .relaxed))
    }

    /// True once the connection has failed at the transport level; it must then be closed.
    public nonisolated var isBroken: Bool { broken.load(ordering: .relaxed) }

    /// False while the server holds a transaction block open on this connection (as of the last
    /// statement): a pool does not lend it again.
    public nonisolated var isReusable: Bool { !isBroken && !inTransaction.load(ordering: .relaxed) }

    private init(thread: DedicatedThread, plans: PlanGeneration?, logger: Logger) {
        self.thread = thread
        self.plans = plans
        self.plansMadeIn = plans?.current ?? 0
        self.logger = logger
        self.notices = NoticeSink(logger: logger)
    }

    /// Opens a connection. The password is never logged. `plans`: when renewed, the connection
    /// remakes its plans (by default they live as long as it).
    public static func connect(_ configuration: PostgresConfiguration, plans: PlanGeneration? = nil, logger: Logger) async throws -> PostgresConnection {
        let connection = PostgresConnection(thread: DedicatedThread(), plans: plans, logger: logger)
        do {
            try await connection.open(configuration)
        } catch {
            await connection.close()
            throw error
        }
        return connection
    }

    private func open(_ configuration: PostgresConfiguration) throws {
        let pairs = configuration.keywordValues
        let keywords = pairs.map { strdup($0.0) }
        let values = pairs.map { strdup($0.1) }
        defer {
            keywords.forEach { free($0) }
            values.forEach { free($0) }
        }
        let conn = (keywords.map { UnsafePointer($0) } + [nil]).withUnsafeBufferPointer { keywordPointer in
            (values.map { UnsafePointer($0) } + [nil]).withUnsafeBufferPointer { valuePointer in
                PQconnectdbParams(keywordPointer.baseAddress, valuePointer.baseAddress, 1)
            }
        }
        guard let conn, PQstatus(conn) == CONNECTION_OK else {
            let message = conn.map { String(cString: PQerrorMessage($0)) } ?? "out of memory"
            PQfinish(conn)
            broken.store(true, ordering: .relaxed)
            throw PostgresError(kind: .connection, message: Self.trim(message))
        }
        // The server's notices and warnings go to this connection's logger instead of libpq's
        // default, which prints them raw to stderr in the middle of structured log lines. The
        // sink lives as long as the connection, which outlives its handle.
        PQsetNoticeReceiver(conn, { context, result in
            guard let context, let result else { return }
            Unmanaged<NoticeSink>.fromOpaque(context).takeUnretainedValue().receive(result)
        }, Unmanaged.passUnretained(notices).toOpaque())
        handle = conn
        let identity = try self.query(PostgresQuery(
            "SELECT pg_backend_pid(), (extract(epoch FROM a.backend_start) * 1000000)::int8 FROM pg_stat_activity a WHERE a.pid = pg_backend_pid()"))
        if let row = identity.first {
            pid.store(try row.decode(Int32.self, at: 0), ordering: .relaxed)
            started.store(try row.decode(Int64.self, at: 1), ordering: .relaxed)
        }
    }

    /// Closes the connection and stops its thread.
    public nonisolated func close() async {
        await finish()
        await thread.shutdown()
    }

    /// Marks the connection unusable: the pool closes it instead of lending it again.
    public nonisolated func markBroken() { broken.store(true, ordering: .relaxed) }

    /// Records whether the server holds a transaction block open (`isReusable`).
    func noteTransactionState(_ conn: OpaquePointer) {
        let status = PQtransactionStatus(conn)
        inTransaction.store(status == PQTRANS_INTRANS || status == PQTRANS_INERROR, ordering: .relaxed)
    }

    private func finish() {
        if let handle { PQfinish(handle) }
        handle = nil
        broken.store(true, ordering: .relaxed)
    }

    // MARK: Statements

    /// Runs one parameterized statement and returns its rows (empty for commands).
    @discardableResult
    public func query(_ query: PostgresQuery) throws -> PostgresRows {
        let conn = try liveHandle()
        try discardStalePlans(conn)
        let key = StatementKey(query)
        let name = try preparedName(query, conn)
        let result = withParameters(query.binds) { count, values, lengths, formats in
            if let name {
                return PQexecPrepared(conn, name, count, values, lengths, formats, 1)
            }
            return key.types.withUnsafeBufferPointer { types in
                PQexecParams(conn, query.sql, count, types.baseAddress, values, lengths, formats, 1)
            }
        }
        return try consume(result, conn)
    }

    /// How many times this connection has dropped its plans (for tests).
    public nonisolated var planRenewals: Int { renewals.load(ordering: .relaxed) }

    /// Drops this connection's cached plans if its generation was renewed since they were made.
    /// Not in a failed transaction, where the server accepts nothing but its end.
    func discardStalePlans(_ conn: OpaquePointer) throws {
        guard let plans else { return }
        let generation = plans.current
        guard generation != plansMadeIn, PQtransactionStatus(conn) != PQTRANS_INERROR else { return }
        try consume(PQexec(conn, "DISCARD PLANS"), conn)
        plansMadeIn = generation
        renewals.add(1, ordering: .relaxed)
    }

    /// The name `query` is prepared under on this connection, preparing it on first use; nil once
    /// `maxPreparedStatements` are prepared (it then runs unnamed).
    func preparedName(_ query: PostgresQuery, _ conn: OpaquePointer) throws -> String? {
        let key = StatementKey(query)
        if let name = preparedStatements[key] { return name }
        guard preparedStatements.count < Self.maxPreparedStatements else { return nil }
        let name = "wa_\(preparedStatements.count)"
        let result = key.types.withUnsafeBufferPointer { types in
            PQprepare(conn, name, query.sql, Int32(types.count), types.baseAddress)
        }
        try consume(result, conn)
        preparedStatements[key] = name
        return name
    }

    /// Runs one or more statements without parameters (the simple query protocol), for DDL and
    /// migrations. Never build `sql` from input: use `query(_:)` for anything with values in it.
    public func execute(_ sql: String) throws {
        let conn = try liveHandle()
        try consume(PQexec(conn, sql), conn)
    }

    /// Runs `body` in a transaction: committed if it returns, rolled back if it throws.
    public nonisolated func withTransaction<T: Sendable>(
        _ body: (PostgresConnection) async throws -> T
    ) async throws -> T {
        try await execute("BEGIN")
        return try await endingTransaction { try await body(self) }
    }

    /// Runs `body` in the transaction begun on this connection: commits after it, or rolls back if
    /// it throws (unless the connection broke).
    nonisolated func endingTransaction<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        let value: T
        do {
            value = try await body()
        } catch {
            if !isBroken { try? await execute("ROLLBACK") }
            throw error
        }
        try await execute("COMMIT")
        return value
    }

    // MARK: libpq plumbing

    func liveHandle() throws -> OpaquePointer {
        guard let handle, !isBroken else {
            throw PostgresError(kind: .connection, message: "connection is closed")
        }
        return handle
    }

    /// Lays the parameters out in one buffer and passes libpq pointers into it.
    func withParameters<R>(
        _ binds: [PostgresBind],
        _ body: (Int32, UnsafePointer<UnsafePointer<CChar>?>?, UnsafePointer<Int32>?, UnsafePointer<Int32>?) -> R
    ) -> R {
        var buffer: [UInt8] = []
        buffer.reserveCapacity(binds.reduce(1) { $0 + ($1.bytes?.count ?? 0) + 1 })
        var offsets: [Int] = []
        var lengths: [Int32] = []
        for bind in binds {
            offsets.append(buffer.count)
            lengths.append(Int32(bind.bytes?.count ?? 0))
            if let bytes = bind.bytes {
                buffer.append(contentsOf: bytes)
                // libpq reads text-format values as C strings and ignores their length.
                if bind.format == 0 { buffer.append(0) }
            }
        }
        if buffer.isEmpty { buffer.append(0) }  // a valid base address for empty values
        let formats = binds.map(\.format)
        return buffer.withUnsafeBytes { raw in
            let base = raw.baseAddress!.assumingMemoryBound(to: CChar.self)
            let values: [UnsafePointer<CChar>?] = binds.indices.map { binds[$0].bytes == nil ? nil : base + offsets[$0] }
            return values.withUnsafeBufferPointer { valuePointer in
                lengths.withUnsafeBufferPointer { lengthPointer in
                    formats.withUnsafeBufferPointer { formatPointer in
                        body(Int32(binds.count), valuePointer.baseAddress, lengthPointer.baseAddress, formatPointer.baseAddress)
                    }
                }
            }
        }
    }

    /// Checks a result, copies its rows out and frees it.
    @discardableResult
    func consume(_ result: OpaquePointer?, _ conn: OpaquePointer) throws -> PostgresRows {
        guard let result else {
            throw connectionError(conn)
        }
        defer {
            PQclear(result)
            noteTransactionState(conn)
        }
        switch PQresultStatus(result) {
        case PGRES_TUPLES_OK, PGRES_COMMAND_OK, PGRES_EMPTY_QUERY, PGRES_SINGLE_TUPLE:
            // A statement outside a transaction block commits when the server reads the Sync that
            // follows it, after it has sent its rows and CommandComplete. libpq hands back that
            // result even when the connection broke before ReadyForQuery: then whether it
            // committed is unknown, and the caller must not take it as done.
            guard PQstatus(conn) == CONNECTION_OK else { throw connectionError(conn) }
            return Self.copyRows(result)
        default:
            if PQstatus(conn) != CONNECTION_OK { throw connectionError(conn) }
            func field(_ code: Character) -> String? { errorField(result, code) }
            throw PostgresError(
                kind: .server,
                sqlState: field("C"),
                message: field("M") ?? Self.trim(String(cString: PQresultErrorMessage(result))),
                detail: field("D"),
                hint: field("H")
            )
        }
    }

    func connectionError(_ conn: OpaquePointer) -> PostgresError {
        broken.store(true, ordering: .relaxed)
        let message = Self.trim(String(cString: PQerrorMessage(conn)))
        logger.warning("postgres connection broken", metadata: ["error": "\(message)"])
        return PostgresError(kind: .connection, message: message.isEmpty ? "connection lost" : message)
    }

    private static func copyRows(_ result: OpaquePointer) -> PostgresRows {
        let rowCount = Int(PQntuples(result))
        let columnCount = Int(PQnfields(result))
        let columns = (0..<columnCount).map { String(cString: PQfname(result, Int32($0))) }
        let types = (0..<columnCount).map { PostgresType(rawValue: PQftype(result, Int32($0))) }
        var storage: [UInt8] = []
        var cells: [(Int, Int)] = []
        cells.reserveCapacity(rowCount * columnCount)
        for row in 0..<Int32(rowCount) {
            for column in 0..<Int32(columnCount) {
                if PQgetisnull(result, row, column) == 1 {
                    cells.append((0, -1))
                    continue
                }
                let length = Int(PQgetlength(result, row, column))
                cells.append((storage.count, length))
                if let value = PQgetvalue(result, row, column), length > 0 {
                    value.withMemoryRebound(to: UInt8.self, capacity: length) {
                        storage.append(contentsOf: UnsafeBufferPointer(start: $0, count: length))
                    }
                }
            }
        }
        let tuples = String(cString: PQcmdTuples(result))
        return PostgresRows(columns: columns, types: types, storage: storage, cells: cells, affectedRows: Int(tuples))
    }

    static func trim(_ message: String) -> String {
        message.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func isPlainIdentifier(_ text: String) -> Bool {
        guard let first = text.unicodeScalars.first, text.count <= 63 else { return false }
        let letters = "abcdefghijklmnopqrstuvwxyz_"
        return letters.unicodeScalars.contains(first)
            && text.unicodeScalars.allSatisfy { letters.unicodeScalars.contains($0) || ("0"..."9").contains(Character($0)) }
    }
}

/// One field of an error or notice (`C` SQLSTATE, `M` message, `D` detail, `H` hint, `V` severity).
private func errorField(_ result: OpaquePointer, _ code: Character) -> String? {
    PQresultErrorField(result, Int32(code.asciiValue!)).map { String(cString: $0) }
}

/// Receives the server's notices for one connection and logs them with their severity and
/// SQLSTATE: WARNING at warning level, NOTICE and INFO (sent only if a session lowers
/// `client_min_messages` from the configured `warning`) at info, the rest at debug.
final class NoticeSink: Sendable {
    private let logger: Logger

    init(logger: Logger) {
        self.logger = logger
    }

    func receive(_ result: OpaquePointer) {
        func field(_ code: Character) -> String? { errorField(result, code) }
        let severity = field("V") ?? field("S") ?? "NOTICE"
        let level: Logger.Level
        switch severity {
        case "WARNING": level = .warning
        case "NOTICE", "INFO": level = .info
        default: level = .debug
        }
        let message = field("M") ?? String(cString: PQresultErrorMessage(result)).trimmingCharacters(in: .whitespacesAndNewlines)
        logger.log(level: level, "postgres: \(message)", metadata: ["postgres.severity": "\(severity)", "postgres.sqlstate": "\(field("C") ?? "")"])
    }
}
