import Foundation
import HTTPSurface
import HTTPTypes
import Hummingbird
import Logging
import OutboxCore
import OutboxStore
import PostgresClient

/// The operator console at `/console`: server-rendered pages over the outbox (overview, sessions,
/// jobs, failures, live stream) and the operator's actions (replay, cancel, pause, resume),
/// served by `wa-outbox api` and by a worker's admin port.
///
/// Access: a login with the operator token (`WA_OUTBOX_ADMIN_TOKEN`, every organization) or an API
/// key holding `operate` (its organization only: every query is scoped to it). The login is a
/// cookie (HttpOnly, SameSite=Strict, Secure behind TLS); every POST carries the login's CSRF
/// token. Without a login a page redirects to the login form and an action answers 401; an
/// action without its CSRF token answers 403.
public struct Console: Sendable {
    public var database: PostgresDatabase
    /// The operator token; nil or empty: only API keys with `operate` log in.
    public var adminToken: String?
    /// Secure cookies: nil decides per request (`X-Forwarded-Proto: https` from the TLS proxy).
    public var secureCookies: Bool?
    public var loginLifetime: Duration = .seconds(12 * 3600)
    public var logger: Logger

    static let cookieName = "wa_console"

    public init(database: PostgresDatabase, adminToken: String?, secureCookies: Bool? = nil, logger: Logger) {
        self.database = database
        self.adminToken = adminToken
        self.secureCookies = secureCookies
        self.logger = logger
    }

    public func register<Context: RequestContext>(on router: Router<Context>) {
        ConsoleAssets.register(on: router)
        LoginRoutes(console: self).register(on: router)
        OverviewPage(console: self).register(on: router)
        SessionsPage(console: self).register(on: router)
        JobsPage(console: self).register(on: router)
        JobPage(console: self).register(on: router)
        FailuresPage(console: self).register(on: router)
        JobActions(console: self).register(on: router)
        StreamPage(console: self).register(on: router)
    }

    /// The operator a request's cookie names, if its login is live.
    func loggedIn(_ request: Request) async throws -> ConsoleOperator? {
        guard let token = request.cookies[Self.cookieName]?.value else { return nil }
        return try await ConsoleLogins.find(token: token, in: database)
    }

    /// A page: rendered for a logged-in operator, otherwise a redirect to the login form.
    func page(_ request: Request, _ render: (ConsoleOperator) async throws -> String) async throws -> Response {
        guard let op = try await loggedIn(request) else {
            return HTML.redirect("/console/login")
        }
        return HTML.response(try await render(op))
    }

    /// An action (a POST): the operator and the form, or 401 without a login and 403 without the
    /// login's CSRF token (a form field `csrf`, or the `X-CSRF-Token` header of a script's request).
    func action(_ request: Request) async throws -> (ConsoleOperator, Form) {
        guard let op = try await loggedIn(request) else {
            throw APIError.unauthorized("log in to the console first: /console/login")
        }
        let form = try await Form.read(request)
        let presented = form["csrf"] ?? request.headers[HTTPField.Name("X-CSRF-Token")!] ?? ""
        guard ConstantTime.equals(Array(presented.utf8), Array(op.csrf.utf8)) else {
            throw APIError(.forbidden, .forbidden, "missing or wrong CSRF token: reload the page and try again")
        }
        return (op, form)
    }

    /// Whether the login cookie gets `Secure`: behind a TLS proxy, or when configured so.
    func secure(_ request: Request) -> Bool {
        secureCookies ?? (request.headers[HTTPField.Name("X-Forwarded-Proto")!]?.lowercased() == "https")
    }
}

extension ConsoleOperator {
    /// A filter narrowed to what this operator may see.
    func scoped(_ filter: JobFilter) -> JobFilter {
        var filter = filter
        if let org { filter.org = org }
        return filter
    }

    /// Whether this operator may see `org`'s data.
    func sees(_ org: String) -> Bool { self.org == nil || self.org == org }
}
