import Foundation
import Testing
import TestSupport

/// schemathesis (PyPI, the version scripts/test pins) against a live `wa-outbox api` with a worker
/// and the simulator behind it, from the document the API serves at `/openapi.json`: no 5xx but
/// the documented 501, and no answer the document does not describe (status, content type,
/// headers, body schema).
///
/// A Swift test rather than a step of scripts/test: it starts the processes the way every other
/// live test does (`LiveGateway`, a database of its own, the key made by `apikeys create`), stops
/// them on every path, and runs alone with `scripts/test --filter Schemathesis`.
@Suite("schemathesis")
struct SchemathesisTests {
    static let config = TestEnvironment.repositoryRoot.appendingPathComponent("Tests/Contract/schemathesis.toml")

    @Test func theLiveAPIKeepsItsOpenAPIDocument() async throws {
        try await LiveGateway.run(apis: 1, workers: 1, sessions: [(org: "org1", id: "s1")], apiArguments: ["--sync-timeout-ms", "3000"]) { gateway in
            let key = try await gateway.createKey(org: "org1")
            let base = "http://127.0.0.1:\(gateway.ports[0])"
            let scratch = try TestEnvironment.scratchDirectory("schemathesis")
            let run = try await Subprocess.run(URL(fileURLWithPath: "/usr/bin/env"), [
                "python3", "-c", "import sys; from schemathesis.cli import schemathesis; sys.argv[0] = 'st'; sys.exit(schemathesis())",
                "--config-file", Self.config.path, "run", "\(base)/openapi.json", "--url", base,
                "--header", "Authorization: Bearer \(key)",
                // The event stream never ends: its contract is the Swift tests' (EventStreamTests).
                "--exclude-path", "/api/v1/events",
                "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance",
                "--max-examples", "25", "--request-timeout", "20", "--workers", "2", "--no-color",
            ], directory: scratch)
            print(run.output.split(separator: "\n").suffix(25).joined(separator: "\n"))
            #expect(run.status == 0, "schemathesis found problems (exit \(run.status)):\n\(run.output.suffix(8_000))")
        }
    }
}
