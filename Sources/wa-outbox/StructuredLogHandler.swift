import Foundation
import Logging
import NIOConcurrencyHelpers

/// One line per log record on standard error, as JSON or logfmt, with the record's metadata
/// (job, session and organization ids among them) as fields.
struct StructuredLogHandler: LogHandler {
    enum Format: String { case json, logfmt }

    let label: String
    let format: Format
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    private static let output = NIOLock()

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var fields: [(String, String)] = [
            ("time", Self.timestamp()), ("level", event.level.rawValue), ("logger", label), ("message", "\(event.message)"),
        ]
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { $1 } }
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        for key in merged.keys.sorted() { fields.append((key, "\(merged[key]!)")) }
        let line: String
        switch format {
        case .json:
            line = "{" + fields.map { "\(Self.quote($0.0)):\(Self.quote($0.1))" }.joined(separator: ",") + "}"
        case .logfmt:
            line = fields.map { "\($0.0)=\(Self.logfmtValue($0.1))" }.joined(separator: " ")
        }
        Self.output.withLock { FileHandle.standardError.write(Data((line + "\n").utf8)) }
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

/// Sets up logging once, from WA_OUTBOX_LOG_FORMAT (json, logfmt or text) and WA_OUTBOX_LOG_LEVEL.
enum LogSetup {
    static let once: Void = {
        let level = environment["WA_OUTBOX_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info
        switch environment["WA_OUTBOX_LOG_FORMAT"].flatMap(StructuredLogHandler.Format.init(rawValue:)) {
        case .some(let format):
            LoggingSystem.bootstrap { label in
                var handler = StructuredLogHandler(label: label, format: format)
                handler.logLevel = level
                return handler
            }
        case .none:
            LoggingSystem.bootstrap { label in
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            }
        }
    }()
}
