import Coordination
import HTTPSurface
import HTTPTypes
import Hummingbird
import JobDispatch
import OutboxCore
import OutboxStore
import PostgresClient

/// Finds an organization's session; another organization's session is "not found", so existence
/// never leaks across organizations.
enum SessionLookup {
    static func find(_ id: String, org: String, in database: PostgresDatabase) async throws -> SessionRecord {
        guard let record = try await SessionRegistry.find(id, in: database), record.org == org else {
            throw APIError.notFound("session \(id) not found")
        }
        return record
    }
}

/// What a synchronous send must pass before it is queued: a session that can send now, and room
/// in its rate limit. Refused, it leaves nothing queued.
enum SyncAdmission {
    static func check(_ session: SessionRecord, dependencies: GatewayDependencies) async throws {
        guard session.state == "active" else {
            throw APIError(.conflict, .sessionUnavailable, "session \(session.id) is \(session.state)\(session.stateReason.map { ": \($0)" } ?? ""); send with ?async=true to queue it")
        }
        if let status = session.engineStatus, status == "disconnected" || status == "connecting" {
            throw APIError(.conflict, .sessionUnavailable, "session \(session.id) is not connected to WhatsApp (\(status)); send with ?async=true to queue it")
        }
        guard let coordinator = dependencies.coordinator else { return }
        let wait: Duration?
        do {
            wait = try await coordinator.rateRetryAfter(session: session.id, limits: session.limits(over: dependencies.defaultLimits))
        } catch {
            throw APIError(.serviceUnavailable, .internalError, "rate limits cannot be checked right now; retry shortly",
                           details: ["retryAfter": "1"])
        }
        if let wait {
            let seconds = max(1, Int((wait.milliseconds + 999) / 1_000))
            throw APIError(.tooManyRequests, .rateLimited, "session \(session.id) is over its send rate; retry in \(seconds) s or send with ?async=true",
                           details: ["retryAfter": String(seconds)])
        }
    }
}

/// A job's final event as the synchronous answer.
enum FinalStatus {
    static func isFinal(_ status: String) -> Bool {
        ["sent", "edited", "revoked", "failed", "canceled"].contains(status)
    }

    static func response(_ event: StatusEvent, replayed: Bool) throws -> Response {
        switch event.status {
        case "sent", "edited", "revoked":
            let result = SendResult(outboxId: event.outboxId, waMessageId: event.waMessageId, status: event.status, mode: "sync",
                                    replayed: replayed, timestamp: Int64(event.timestamp))
            return try JSONResponse.make(.ok, result)
        default:
            let code = event.errorCode.flatMap(ErrorCode.init(rawValue:)) ?? (event.status == "canceled" ? .canceled : .engineError)
            throw APIError(APIError.status(of: code), code, event.errorMessage ?? "the message was \(event.status)",
                           details: ["outboxId": event.outboxId, "waMessageId": event.waMessageId])
        }
    }
}
