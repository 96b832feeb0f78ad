import Foundation
import OutboxCore

/// What an engine says about itself and one session, and which of the outbox's operations will
/// work there: `wa-outbox sessions check`. The rules are those of the conformance fixtures
/// (`Tests/WorkerTests/Fixtures/engines/`); what the engine does not say is reported as unknown,
/// never guessed as working.
public struct EngineCheck: Sendable, Codable, Equatable {
    public struct Operation: Sendable, Codable, Equatable {
        public var name: String
        /// nil: cannot be told from what the engine says.
        public var works: Bool?
        public var note: String?

        public init(_ name: String, works: Bool?, note: String? = nil) {
            self.name = name
            self.works = works
            self.note = note
        }
    }

    public var engine: String
    public var version: String?
    /// WAHA's WhatsApp backend: GOWS, NOWEB, WEBJS.
    public var backend: String?
    /// WAHA's tier: PLUS or CORE.
    public var tier: String?
    /// The session's status, or why it could not be read.
    public var status: String
    public var operations: [Operation]
    public var warnings: [String]

    public init(engine: String, version: String? = nil, backend: String? = nil, tier: String? = nil, status: String,
                operations: [Operation], warnings: [String] = []) {
        self.engine = engine
        self.version = version
        self.backend = backend
        self.tier = tier
        self.status = status
        self.operations = operations
        self.warnings = warnings
    }

    /// The session's status as a check reports it.
    static func describe(_ status: Result<EngineSessionStatus, DispatchFailure>) -> String {
        switch status {
        case .success(let status): status.rawValue
        case .failure(let failure): "unknown (\(failure))"
        }
    }
}

extension SessionEngine {
    /// By default: the status, and every operation as working (the in-process simulator).
    public func check(session: String) async -> EngineCheck {
        let status: Result<EngineSessionStatus, DispatchFailure>
        do { status = .success(try await self.status(session: session)) } catch { status = .failure(error) }
        let names = ["send text", "send poll", "send location", "send contact", "edit", "revoke own", "revoke another's"]
        return EngineCheck(engine: "sim", status: EngineCheck.describe(status), operations: names.map { .init($0, works: true) })
    }
}

extension WahaEngine {
    /// `GET /api/server/version` (`{version, engine, tier}`, WAHA's `server.controller.ts`) and the
    /// session's status.
    public func check(session: String) async -> EngineCheck {
        let info = (try? await get("/api/server/version")).flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }
        let backend = (info?["engine"] as? String)?.uppercased()
        let tier = (info?["tier"] as? String)?.uppercased()
        let status: Result<EngineSessionStatus, DispatchFailure>
        do { status = .success(try await self.status(session: session)) } catch { status = .failure(error) }
        var warnings: [String] = []
        if info == nil { warnings.append("WAHA did not say its version, engine and tier (GET /api/server/version)") }
        let core = tier == "CORE"
        if core, session != "default" {
            warnings.append("WAHA Core serves only the 'default' session: every job of this session fails with engine_unsupported")
        }
        let usable: Bool? = core && session != "default" ? false : nil
        func works(_ known: Bool?) -> Bool? { usable == false ? false : known }
        let webjsCore = backend == "WEBJS" && core
        let operations: [EngineCheck.Operation] = [
            .init("send text", works: works(true)),
            .init("send poll", works: works(webjsCore ? false : (backend == nil ? nil : true)),
                  note: webjsCore ? "WEBJS in WAHA Core has no sendPoll" : nil),
            .init("send location", works: works(true)),
            .init("send contact", works: works(webjsCore ? false : (backend == nil ? nil : true)),
                  note: webjsCore ? "WEBJS in WAHA Core has no sendContactVcard" : nil),
            .init("edit", works: works(true)),
            .init("revoke own", works: works(true)),
            .init("revoke another's", works: works(true)),
            .init("reconcile after a timeout", works: works(backend == "NOWEB" ? nil : true),
                  note: backend == "NOWEB" ? "needs the NOWEB store (config.noweb.store.enabled); without it a timed-out send fails with engine_unsupported" : nil),
            .init("signed receipt webhooks", works: tier.map { $0 == "PLUS" },
                  note: core ? "unsigned: point WAHA at /webhooks/waha/SESSION/URLSECRET" : nil),
        ]
        return EngineCheck(engine: "waha", version: info?["version"] as? String, backend: backend, tier: tier,
                           status: EngineCheck.describe(status), operations: operations, warnings: warnings)
    }
}

extension WuzapiEngine {
    /// wuzapi says no version; `GET /session/status` tells the families apart: `connected`,
    /// `loggedIn` since mid-2025, `Connected`, `LoggedIn` before (no edit, no polls, no signing).
    public func check(session: String) async -> EngineCheck {
        let answer: Result<Data, DispatchFailure>
        do { answer = .success(try await get("/session/status")) } catch { answer = .failure(error) }
        let data = (try? answer.get()).flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }?["data"] as? [String: Any]
        let old: Bool? = data.map { $0["Connected"] != nil }
        let status: Result<EngineSessionStatus, DispatchFailure> = answer.map { _ in Self.sessionStatus(data ?? [:]) }
        let current: Bool? = old.map { !$0 }
        let operations: [EngineCheck.Operation] = [
            .init("send text", works: true),
            .init("send poll", works: current, note: old == true ? "no /chat/send/poll before mid-2025" : "single-choice only"),
            .init("send location", works: true, note: "not at latitude or longitude exactly 0"),
            .init("send contact", works: true),
            .init("edit", works: current, note: old == true ? "no /chat/send/edit before mid-2025" : nil),
            .init("revoke own", works: true),
            .init("revoke another's", works: false, note: "/chat/delete revokes own messages only"),
            .init("signed receipt webhooks", works: old == true ? false : nil,
                  note: old == true ? "unsigned: point wuzapi at /webhooks/wuzapi/SESSION/URLSECRET" : "signed only once the user has an HMAC key (late 2025 on)"),
        ]
        return EngineCheck(engine: "wuzapi", version: old.map { $0 ? "before mid-2025" : "mid-2025 or later" },
                           status: EngineCheck.describe(status), operations: operations,
                           warnings: old == true ? ["this wuzapi predates edits and polls; jobs of those kinds fail with engine_unsupported"] : [])
    }
}
