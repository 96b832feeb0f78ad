import Foundation
import LineOutput
import Logging

/// Sets up logging once, from WA_OUTBOX_LOG_FORMAT (json, logfmt or text) and WA_OUTBOX_LOG_LEVEL.
///
/// Every format writes through `standardError`, a `LineWriter`: no log call blocks a thread on a
/// slow reader of standard error. Whatever is still queued when the process exits is written by
/// an `atexit` handler (waiting at most two seconds for a reader that does not read), so a short
/// command's last lines are not lost.
enum LogSetup {
    static let format = environment["WA_OUTBOX_LOG_FORMAT"].flatMap(StructuredLogHandler.Format.init(rawValue:))

    /// Standard error, for log lines: up to 4 MiB queued (a second or more of a busy worker's
    /// lines), beyond that dropped and counted.
    static let standardError = LineWriter(fileDescriptor: STDERR_FILENO, capacity: .bounded(bytes: 4 << 20), name: "wa-outbox-log") { dropped in
        let message = "\(dropped) log lines dropped: standard error was not read fast enough"
        guard let format else { return message + "\n" }
        return StructuredLogHandler.line(format, level: .warning, label: "wa-outbox.log", message: message, metadata: ["log.dropped": "\(dropped)"])
    }

    static let once: Void = {
        let level = environment["WA_OUTBOX_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info
        switch format {
        case .some(let format):
            LoggingSystem.bootstrap { label in
                var handler = StructuredLogHandler(label: label, format: format, output: standardError)
                handler.logLevel = level
                return handler
            }
        case .none:
            LoggingSystem.bootstrap { label in
                var handler = StreamLogHandler(label: label, stream: standardError)
                handler.logLevel = level
                return handler
            }
        }
        atexit { LogSetup.standardError.flush(timeout: .seconds(2)) }
    }()
}
