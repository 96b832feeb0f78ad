import Foundation
import HTTPSurface
import Hummingbird
import OutboxCore
import OutboxStore
import PostgresClient

/// The operator API on the admin port, for dashboards: the same list, show, replay, cancel and
/// stats as the CLI. Every request needs `Authorization: Bearer <operator token>`; without a
/// configured token the API answers 404 (disabled), and a wrong token gets 401. Errors are
/// `APIError`s: the gateway's envelope, `{"error":{"code","message","details"}}`.
public enum AdminAPI {
    public static func register(on router: Router<BasicRequestContext>, database: PostgresDatabase, token: String?) {
        let api = router.group("/admin")
        api.get("/jobs") { request, _ in
            try authorize(request, token)
            let jobs = try await JobQueries.list(try filter(request.uri.queryParameters), limit: request.uri.queryParameters.get("limit", as: Int.self) ?? 100,
                                                 includePayload: request.uri.queryParameters.get("show_body") == "true", in: database)
            return try json(jobs)
        }
        api.get("/jobs/:id") { request, context in
            try authorize(request, token)
            guard let id = context.parameters.get("id", as: Int64.self),
                  let detail = try await JobQueries.show(id, org: request.uri.queryParameters.get("org"),
                                                         includePayload: request.uri.queryParameters.get("show_body") == "true", in: database) else {
                throw APIError.notFound("no such job")
            }
            return try json(detail)
        }
        api.post("/jobs/replay") { request, context in
            try authorize(request, token)
            let body = try await request.decode(as: OperationRequest.self, context: context)
            let plan = try await JobQueries.planReplay(try body.jobFilter(), in: database)
            guard body.dryRun != true else { return try json(plan) }
            var report = OperationReport()
            report.skipped = plan.skipped
            report.done = try await JobQueries.replayAll(plan.done, actor: body.actor ?? "admin-api", reason: body.reason,
                                                         newMessageID: body.newMessageId ?? false, in: database)
            return try json(report)
        }
        api.post("/jobs/cancel") { request, context in
            try authorize(request, token)
            let body = try await request.decode(as: OperationRequest.self, context: context)
            return try json(try await JobQueries.cancel(try body.jobFilter(), actor: body.actor ?? "admin-api", reason: body.reason, in: database))
        }
        api.get("/stats") { request, _ in
            try authorize(request, token)
            return try json(try await QueueStats.read(from: database, org: request.uri.queryParameters.get("org")))
        }
    }

    /// A replay or cancel: which jobs (at least one filter) and why.
    struct OperationRequest: Decodable {
        var ids: [Int64]?
        var state: [String]?
        var org: String?
        var session: String?
        var chat: String?
        var kind: String?
        var errorCode: String?
        var reason: String
        var actor: String?
        var newMessageId: Bool?
        var dryRun: Bool?

        func jobFilter() throws -> JobFilter {
            var filter = JobFilter()
            filter.ids = ids
            filter.states = try state.map { try $0.map { guard let s = JobState(rawValue: $0) else { throw APIError.validation("unknown state \($0)") }; return s } }
            filter.org = org
            filter.session = session
            filter.chat = chat
            filter.kind = try kind.map { guard let k = JobKind(rawValue: $0) else { throw APIError.validation("unknown kind \($0)") }; return k }
            filter.errorCode = errorCode
            guard ids != nil || state != nil || org != nil || session != nil || chat != nil || kind != nil || errorCode != nil else {
                throw APIError.validation("name the jobs: ids, state, org, session, chat, kind or errorCode")
            }
            guard !reason.trimmingCharacters(in: .whitespaces).isEmpty else { throw APIError.validation("reason is required") }
            return filter
        }
    }

    static func filter(_ query: Hummingbird.Parameters) throws -> JobFilter {
        var filter = JobFilter()
        let states = query.getAll("state")
        if !states.isEmpty {
            filter.states = try states.map { guard let s = JobState(rawValue: $0) else { throw APIError.validation("unknown state \($0)") }; return s }
        }
        filter.org = query.get("org")
        filter.session = query.get("session")
        filter.chat = query.get("chat")
        // An unknown kind is refused: dropped, it would widen the selection to every kind.
        filter.kind = try query.get("kind").map { guard let k = JobKind(rawValue: $0) else { throw APIError.validation("unknown kind \($0)") }; return k }
        filter.errorCode = query.get("error_code")
        return filter
    }

    static func authorize(_ request: Request, _ token: String?) throws {
        guard let token, !token.isEmpty else { throw APIError.notFound("the admin API is disabled: set WA_OUTBOX_ADMIN_TOKEN") }
        let header = request.headers[.authorization] ?? ""
        let presented = header.hasPrefix("Bearer ") ? String(header.dropFirst(7)) : ""
        guard ConstantTime.equals(Array(presented.utf8), Array(token.utf8)) else {
            throw APIError.unauthorized("missing or wrong operator token")
        }
    }

    static func json<T: Encodable>(_ value: T) throws -> Response {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        var response = Response(status: .ok, body: .init(byteBuffer: ByteBuffer(bytes: try encoder.encode(value))))
        response.headers[.contentType] = "application/json"
        return response
    }
}
