import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Simulator
import Synchronization

/// A `wa-outbox` subprocess (worker or simulator), its stderr kept in a file for diagnosis.
public final class OutboxProcess: @unchecked Sendable {
    public let process: ChildProcess
    public let stderrURL: URL

    public init(_ arguments: [String], environment: [String: String] = [:]) throws {
        stderrURL = try TestEnvironment.scratchDirectory("proc").appendingPathComponent("stderr.log")
        FileManager.default.createFile(atPath: stderrURL.path, contents: nil)
        process = try ChildProcess.spawn(try TestEnvironment.executable(), arguments,
                                         environment: ProcessInfo.processInfo.environment.merging(environment) { $1 },
                                         stdout: nil, stderr: stderrURL.path)
    }

    public func signal(_ signal: Int32) { kill(process.processIdentifier, signal) }

    public func exitStatus() async -> Int32 { await Subprocess.terminationStatus(of: process) }

    public var stderr: String { (try? String(contentsOf: stderrURL, encoding: .utf8)) ?? "" }
}

/// The HTTP simulator in its own process.
public struct HTTPSimulator: Sendable {
    public let process: OutboxProcess
    public let baseURL: String
    public let logURL: URL

    public static func start(_ extra: [String] = []) async throws -> HTTPSimulator {
        let port = try await TestEnvironment.freePort()
        let logURL = try TestEnvironment.scratchDirectory("sim").appendingPathComponent("delivery.jsonl")
        let process = try OutboxProcess(["simulator", "--listen", "127.0.0.1:\(port)", "--delivery-log", logURL.path] + extra)
        let simulator = HTTPSimulator(process: process, baseURL: "http://127.0.0.1:\(port)", logURL: logURL)
        for _ in 0..<200 {
            if (try? await simulator.stats()) != nil { return simulator }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestEnvironment.Missing(description: "simulator did not start: \(process.stderr)")
    }

    public func stats() async throws -> WhatsAppSimulator.Stats {
        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: baseURL + "/sim/stats"), timeout: .seconds(5))
        let body = try await response.body.collect(upTo: 1 << 20)
        return try JSONDecoder().decode(WhatsAppSimulator.Stats.self, from: Data(body.readableBytesView))
    }

    public func setStatus(_ status: String, session: String) async throws {
        var request = HTTPClientRequest(url: baseURL + "/sim/sessions/\(session)/status")
        request.method = .POST
        request.body = .bytes(ByteBuffer(string: #"{"status":"\#(status)"}"#))
        request.headers.add(name: "Content-Type", value: "application/json")
        _ = try await HTTPClient.shared.execute(request, timeout: .seconds(5))
    }

    /// The delivery log, after the simulator has written all it holds.
    public func deliveries() async throws -> [Delivery] {
        _ = try await stats()  // flushes
        return try String(contentsOf: logURL, encoding: .utf8).split(separator: "\n").map {
            try JSONDecoder().decode(Delivery.self, from: Data($0.utf8))
        }
    }

    public func stop() async {
        process.signal(SIGTERM)
        _ = await process.exitStatus()
    }
}

extension HTTPSimulator {
    /// Posts a JSON body to one of the simulator's control endpoints.
    @discardableResult
    public func post(_ path: String, _ json: String) async throws -> UInt {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = .POST
        request.body = .bytes(ByteBuffer(string: json))
        request.headers.add(name: "Content-Type", value: "application/json")
        return try await HTTPClient.shared.execute(request, timeout: .seconds(5)).status.code
    }
}

/// Ports `freePort` has handed out in this test process.
private let portsHandedOut = Mutex<Set<Int>>([])

extension TestEnvironment {
    /// A loopback TCP port nothing listens on right now (`servers.sh free-port`), and never one
    /// handed out before in this process: the kernel may offer a port it just offered again, and
    /// two servers of one test given the same port failed a CI rehearsal (the worker's admin
    /// server found its port taken by the API's metrics).
    public static func freePort() async throws -> Int {
        for _ in 0..<50 {
            let output = try await Subprocess.run(URL(fileURLWithPath: "/bin/bash"),
                                                  [repositoryRoot.appendingPathComponent("scripts/lib/servers.sh").path, "free-port"]).output
            guard let port = Int(output.trimmingCharacters(in: .whitespacesAndNewlines)) else {
                throw Missing(description: "servers.sh free-port printed \(output)")
            }
            if portsHandedOut.withLock({ $0.insert(port).inserted }) { return port }
        }
        throw Missing(description: "servers.sh free-port kept offering ports handed out before")
    }
}
