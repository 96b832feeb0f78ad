import Foundation

/// A `/metrics` page read by Prometheus' own parser (Python's prometheus_client): every sample as
/// `name{label=value,…}` (labels sorted) → value. Fails when the parser refuses the page.
public enum PrometheusSamples {
    public struct Unparsable: Error, CustomStringConvertible {
        public var description: String
    }

    public static func parse(_ text: String) async throws -> [String: Double] {
        let file = try TestEnvironment.scratchDirectory("metrics").appendingPathComponent("metrics.txt")
        try text.write(to: file, atomically: true, encoding: .utf8)
        let parsed = try await Subprocess.run(URL(fileURLWithPath: "/usr/bin/env"), ["python3", "-c", """
            import json, sys
            from prometheus_client.parser import text_string_to_metric_families
            out = {}
            for family in text_string_to_metric_families(open(sys.argv[1]).read()):
                for sample in family.samples:
                    labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                    out[f"{sample.name}{{{labels}}}"] = sample.value
            print(json.dumps(out))
            """, file.path])
        guard parsed.status == 0 else {
            throw Unparsable(description: "prometheus_client could not parse /metrics: \(parsed.output.prefix(500)) — page: \(text.prefix(500))")
        }
        return try JSONDecoder().decode([String: Double].self, from: Data(parsed.output.utf8))
    }
}
