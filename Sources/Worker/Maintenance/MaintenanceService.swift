import Logging

/// A periodic piece of a worker's upkeep: one pass at a time, every `interval`.
///
/// Each service is one file with its own interval; tests run a single pass with `runOnce()`.
/// A pass that fails is logged and tried again at the next interval: upkeep never ends a worker.
protocol MaintenanceService: Sendable {
    /// Shown in logs.
    var name: String { get }
    var interval: Duration { get }
    func runOnce() async throws
}

extension MaintenanceService {
    /// Runs a pass at once and then every `interval`, until the task is cancelled.
    func run(logger: Logger) async {
        while !Task.isCancelled {
            do {
                try await runOnce()
            } catch {
                logger.warning("\(name) failed", metadata: ["error": "\(error)"])
            }
            guard (try? await Task.sleep(for: interval)) != nil else { return }
        }
    }
}
