import Foundation
import Logging

/// One line per log record, as JSON or logfmt, with the record's metadata (job, session and
/// organization ids among them) as fields.
///
/// Lines go to a `LineWriter`, which writes them from a thread of its own: logging never blocks
/// the caller, even when nobody reads the output (lines are then dropped and counted).
public struct StructuredLogHandler: LogHandler {
    public enum Format: String, Sendable { case json, logfmt }

    public let label: String
    public let format: Format
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let output: LineWriter

    public init(label: String, format: Format, output: LineWriter) {
        self.label = label
        self.format = format
        self.output = output
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { $1 } }
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        output.write(Self.line(format, level: event.level, label: label, message: "\(event.message)", metadata: merged))
    }

    /// One record as a line in `format`, ending in a newline.
    public static func line(_ format: Format, level: Logger.Level, label: String, message: String, metadata: Logger.Metadata) -> String {
        var fields: [(String, String)] = [("time", timestamp()), ("level", level.rawValue), ("logger", label), ("message", message)]
        for key in metadata.keys.sorted() { fields.append((key, "\(metadata[key]!)")) }
        switch format {
        case .json:
            return "{" + fields.map { "\(quote($0.0)):\(quote($0.1))" }.joined(separator: ",") + "}\n"
        case .logfmt:
            return fields.map { "\($0.0)=\(logfmtValue($0.1))" }.joined(separator: " ") + "\n"
        }
    }

    private static func timestamp() -> String {
        Date().formatted(.iso8601.year().month().day().time(includingFractionalSeconds: true).timeZone(separator: .omitted))
    }

    private static func quote(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case _ where scalar.value < 0x20: result += String(format: "\\u%04x", scalar.value)
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }

    private static func logfmtValue(_ text: String) -> String {
        text.isEmpty || text.contains(where: { $0 == " " || $0 == "=" || $0 == "\"" || $0.isNewline }) ? quote(text) : text
    }
}
