import Foundation
import HTTPTypes
import Hummingbird
import Logging
import OutboxCore
import OutboxStore

/// `/console/login` (the form, and its post) and `/console/logout`.
struct LoginRoutes: Sendable {
    let console: Console

    func register<Context: RequestContext>(on router: Router<Context>) {
        router.get("/console/login") { _, _ in
            HTML.response(form(message: nil))
        }
        router.post("/console/login") { request, _ in
            try await login(request)
        }
        router.post("/console/logout") { request, _ in
            _ = try await console.action(request)
            if let token = request.cookies[Console.cookieName]?.value {
                try await ConsoleLogins.delete(token: token, in: console.database)
            }
            var response = HTML.redirect("/console/login")
            response.headers[.setCookie] = cookie(value: "", maxAge: 0, request: request)
            return response
        }
    }

    func login(_ request: Request) async throws -> Response {
        // A login carries no CSRF token yet (there is no login to bind one to), so a page of
        // another site could post its own operator's token here and sign the browser in as that
        // operator (login CSRF). Browsers say where a request comes from; one from elsewhere is refused.
        guard !Self.comesFromAnotherSite(request) else {
            console.logger.info("console login from another site refused")
            return HTML.response(self.form(message: "A login posted from another site is refused: sign in on this page."), status: .forbidden)
        }
        let form = try await Form.read(request)
        let token = form.text("token") ?? ""
        let name = form.text("operator")
        var org: String?
        var keyID: Int64?
        var who: String
        if let admin = console.adminToken, !admin.isEmpty, ConstantTime.equals(Array(token.utf8), Array(admin.utf8)) {
            guard let name else { return HTML.response(self.form(message: "Enter your name: it is written into the audit trail."), status: .badRequest) }
            who = name
        } else if APIKeyToken.looksLikeKey(token), let key = try await APIKeys.verify(token, in: console.database) {
            guard key.permissions.contains("operate") else {
                return HTML.response(self.form(message: "This API key lacks the 'operate' permission."), status: .forbidden)
            }
            org = key.org
            keyID = key.id
            who = name ?? key.name
        } else {
            console.logger.info("console login refused")
            return HTML.response(self.form(message: "Wrong operator token or API key."), status: .unauthorized)
        }
        who = String(who.prefix(100))
        let created = try await ConsoleLogins.create(name: who, org: org, apiKeyID: keyID, lifetime: console.loginLifetime, in: console.database)
        console.logger.info("console login", metadata: ["operator": "\(who)", "org": "\(org ?? "*")"])
        var response = HTML.redirect("/console")
        response.headers[.setCookie] = cookie(value: created.token, maxAge: Int(console.loginLifetime.components.seconds), request: request)
        return response
    }

    /// Whether the browser says the request was made by a page of another site: `Sec-Fetch-Site`
    /// other than same-origin or none (typed or bookmarked), or, from a browser that does not send
    /// it, an `Origin` whose host is not the one the request was sent to. Clients that are not
    /// browsers send neither and are let through: they are not the victims of a forged form.
    static func comesFromAnotherSite(_ request: Request) -> Bool {
        if let site = request.headers[HTTPField.Name("Sec-Fetch-Site")!] {
            return site != "same-origin" && site != "none"
        }
        guard let origin = request.headers[.origin] else { return false }
        guard let components = URLComponents(string: origin), let host = components.host, let authority = request.head.authority else { return true }
        let originAuthority = host + (components.port.map { ":\($0)" } ?? "")
        return originAuthority.lowercased() != authority.lowercased()
    }

    func cookie(value: String, maxAge: Int, request: Request) -> String {
        "\(Console.cookieName)=\(value); Path=/console; Max-Age=\(maxAge); HttpOnly; SameSite=Strict" + (console.secure(request) ? "; Secure" : "")
    }

    func form(message: String?) -> String {
        HTML.page("Log in", current: "", operator: nil, """
            \(message.map { "<p class=\"error\" role=\"alert\">\(h($0))</p>" } ?? "")
            <form method="post" action="/console/login" class="login">
            <label for="operator">Your name (kept in the audit trail)</label>
            <input id="operator" name="operator" autocomplete="username" maxlength="100">
            <label for="token">Operator token or API key with the <code>operate</code> permission</label>
            <input id="token" name="token" type="password" required autocomplete="current-password">
            <button type="submit">Log in</button>
            </form>
            <p class="hint">An API key's operator sees only the key's organization; its name is used when you leave yours empty.</p>
            """)
    }
}
