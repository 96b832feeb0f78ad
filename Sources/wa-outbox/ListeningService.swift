import ArgumentParser
import Foundation
import Hummingbird
import NIOCore
import ServiceLifecycle

/// An HTTP server as a lifecycle service. An address already in use becomes an error that names
/// the address and the option that sets it, and ends the whole process (the group cancels its
/// other services, which shut down within their grace period).
struct ListeningService<Responder: HTTPResponder>: Service where Responder.Context: InitializableFromSource<ApplicationRequestContextSource> {
    let application: Application<Responder>
    let address: String
    /// The option that sets the address, named in the error.
    let option: String

    /// The environment variable of each option that can be 'off', named in the error.
    static var offHints: [String: String] {
        ["--admin-listen": " (env WA_OUTBOX_ADMIN_LISTEN), or 'off'", "--metrics-listen": " (env WA_OUTBOX_API_METRICS_LISTEN), or 'off'"]
    }

    func run() async throws {
        do {
            try await application.run()
        } catch let error as IOError where error.errnoCode == EADDRINUSE {
            throw ValidationError("""
                \(address) is already in use (another process on this host?): give each process its own \(option) HOST:PORT\
                \(Self.offHints[option] ?? "")
                """)
        }
    }
}
