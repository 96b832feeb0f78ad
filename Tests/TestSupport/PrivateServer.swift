import Foundation

/// A PostgreSQL or Redis server of one test's own, for tests that stop and restart it.
///
/// Started through `scripts/lib/servers.sh`, the same code that starts the shared servers.
public final class PrivateServer: Sendable {
    public enum Kind: String, Sendable { case postgres = "pg", redis }

    public let kind: Kind
    public let directory: URL
    public let url: String

    /// `options`: `cluster` starts a one-node Redis Cluster.
    public static func start(_ kind: Kind, _ options: String...) async throws -> PrivateServer {
        let directory = try TestEnvironment.scratchDirectory("private-\(kind.rawValue)")
        let url = try await run(["\(kind.rawValue)-start", directory.path] + options)
        return PrivateServer(kind: kind, directory: directory, url: url)
    }

    private init(kind: Kind, directory: URL, url: String) {
        self.kind = kind
        self.directory = directory
        self.url = url
    }

    public func stop() async throws { try await Self.run("\(kind.rawValue)-stop", directory.path) }
    public func start() async throws { try await Self.run("\(kind.rawValue)-start", directory.path) }
    public func restart() async throws { try await Self.run("\(kind.rawValue)-restart", directory.path) }

    /// Stops the server and removes its files.
    public func destroy() async {
        try? await stop()
        try? FileManager.default.removeItem(at: directory)
    }

    @discardableResult
    static func run(_ arguments: String...) async throws -> String {
        try await run(arguments)
    }

    static func run(_ arguments: [String]) async throws -> String {
        let script = ProcessInfo.processInfo.environment["WA_OUTBOX_SERVERS"]
            ?? TestEnvironment.repositoryRoot.appendingPathComponent("scripts/lib/servers.sh").path
        let result = try await Subprocess.run(URL(fileURLWithPath: "/bin/bash"), [script] + arguments)
        guard result.status == 0 else {
            throw TestEnvironment.Missing(description: "servers.sh \(arguments.joined(separator: " ")) failed with status \(result.status)")
        }
        return result.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
