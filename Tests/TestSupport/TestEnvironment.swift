import Foundation
import LineOutput
import Logging
import PostgresClient
import RedisClient

/// The real servers the tests run against, as `scripts/test` provides them.
///
/// Nothing here skips a test when a server is missing: a missing server is a failed test with a
/// message saying how to run the suite.
public enum TestEnvironment {
    public struct Missing: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    static func variable(_ name: String) throws -> String {
        guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else {
            throw Missing(description: "\(name) is not set; run the tests with scripts/test, which starts real servers")
        }
        return value
    }

    public static func databaseURL() throws -> String { try variable("DATABASE_URL") }
    public static func redisURL() throws -> String { try variable("REDIS_URL") }

    /// Silent, unless `WA_TEST_LOG_LEVEL` names a level: then the workers and APIs the tests run
    /// in-process log at it to standard error (for reading a failure that happens only under load).
    public static let logger: Logger = {
        guard let name = ProcessInfo.processInfo.environment["WA_TEST_LOG_LEVEL"], let level = Logger.Level(rawValue: name) else {
            var logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
            logger.logLevel = .critical
            return logger
        }
        let output = LineWriter(fileDescriptor: 2, capacity: .unbounded, name: "test-log")
        var logger = Logger(label: "test", factory: { label in StructuredLogHandler(label: label, format: .logfmt, output: output) })
        logger.logLevel = level
        return logger
    }()

    /// A new, empty database on the shared server, so suites running in parallel never see each
    /// other's rows. Returns its URL.
    public static func freshDatabase(prefix: String = "t") async throws -> String {
        try await freshDatabase(prefix: prefix, on: try databaseURL())
    }

    /// A new database for a test that reads the event stream in order. That read waits for every
    /// older write transaction in the cluster, and on the shared server a parallel suite's bulk
    /// statement (many seconds on a loaded machine) holds it back; `scripts/test` starts a second
    /// server for these tests (STREAM_DATABASE_URL). Without one, the shared server.
    public static func freshStreamDatabase(prefix: String = "t") async throws -> String {
        let streams = ProcessInfo.processInfo.environment["STREAM_DATABASE_URL"].flatMap { $0.isEmpty ? nil : $0 }
        return try await freshDatabase(prefix: prefix, on: try streams ?? databaseURL())
    }

    static func freshDatabase(prefix: String, on base: String) async throws -> String {
        let name = "\(prefix)_\(UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(16).lowercased())"
        let admin = try await PostgresConnection.connect(PostgresConfiguration(base), logger: logger)
        // A database name is an identifier; `name` is built above from hex digits only.
        try await admin.execute("CREATE DATABASE \(name)")
        await admin.close()
        return replacingDatabase(in: base, with: name)
    }

    static func replacingDatabase(in url: String, with name: String) -> String {
        guard let slash = url.range(of: "/", options: .backwards), url[..<slash.lowerBound].hasSuffix("//") == false else {
            return url + "/" + name
        }
        let query = url[slash.upperBound...].firstIndex(of: "?").map { String(url[$0...]) } ?? ""
        return String(url[..<slash.upperBound]) + name + query
    }

    /// The repository root (for scripts and migrations).
    public static let repositoryRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    public static var migrationsDirectory: URL { repositoryRoot.appendingPathComponent("migrations") }

    /// The built `wa-outbox` executable, beside the test bundle.
    public static func executable() throws -> URL {
        var directory = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent("wa-outbox")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        throw Missing(description: "wa-outbox executable not found beside the tests; build with `swift build --build-tests`")
    }

    /// A scratch folder for one test, under the test run's temporary folder.
    public static func scratchDirectory(_ label: String) throws -> URL {
        let base = ProcessInfo.processInfo.environment["WA_OUTBOX_TEST_TMP"] ?? NSTemporaryDirectory()
        let url = URL(fileURLWithPath: base).appendingPathComponent("\(label)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}
