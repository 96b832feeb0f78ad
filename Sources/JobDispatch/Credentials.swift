import Foundation
import NIOPosix
import OutboxCore
import OutboxStore

/// Resolves a session's engine credential from its reference: `env:VAR` or `file:/path`.
///
/// A file is read on NIO's blocking thread pool, never on a cooperative thread. A session without
/// a reference uses its own id as its token, which is what the simulator expects.
enum Credentials {
    static func resolve(_ record: SessionRecord) async throws(DispatchFailure) -> String {
        guard let reference = record.credentialRef else { return record.id }
        if reference.hasPrefix("env:") {
            let name = String(reference.dropFirst(4))
            guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else {
                throw .permanent(.engineError, "credential of session \(record.id) is in $\(name), which is not set for this process")
            }
            return value
        }
        if reference.hasPrefix("file:") {
            let path = String(reference.dropFirst(5))
            let value = try? await NIOThreadPool.singleton.runIfActive { try String(contentsOfFile: path, encoding: .utf8) }
            guard let value else {
                throw .permanent(.engineError, "credential file \(path) of session \(record.id) cannot be read")
            }
            return value.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        throw .permanent(.engineError, "credential reference of session \(record.id) must be env:VAR or file:/path")
    }
}
