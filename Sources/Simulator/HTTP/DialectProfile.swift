import NIOConcurrencyHelpers

/// The engine version an HTTP dialect answers as: one family of the conformance fixtures
/// (`Tests/WorkerTests/Fixtures/engines/`), whose sources each behaviour cites. Current versions by
/// default; `POST /sim/profile {"profile": NAME}` switches.
public enum DialectProfile: String, Sendable, CaseIterable {
    /// WAHA Plus, current, GOWS engine (devlikeapro/waha: session.gows.core.ts 027a488f, ids.ts
    /// d2658412, enums.dto.ts c0a4b223): sends answer `{id, _data}`; HMAC-signed webhooks with
    /// `message.ack.group` for groups.
    case wahaPlusGows = "waha-plus-gows"
    /// WAHA Core 2024.10.8 (1a59300c), WEBJS: no sendPoll or sendContactVcard (422), only the
    /// 'default' session, unsigned webhooks.
    case wahaCoreWebjs = "waha-2024.10-core-webjs"
    /// WAHA Core 2024.10.8, NOWEB without its store: sends answer the Baileys message (`key.id`), a
    /// contact an empty 201; listing a chat answers 400 "Enable NOWEB store".
    case wahaCoreNoweb = "waha-2024.10-core-noweb"
    /// wuzapi, current (asternic/wuzapi handlers.go, helpers.go 02a462c2): `connected`/`loggedIn`,
    /// Unix timestamps, lower-case errors, signed webhooks.
    case wuzapiCurrent = "wuzapi-current"
    /// wuzapi of 2025-05 (79ee4cd8): `Connected`/`LoggedIn`, RFC 3339 timestamps, no edit or poll
    /// endpoint, unsigned form-encoded webhooks.
    case wuzapi202505 = "wuzapi-2025.05"

    public static func defaultProfile(waha: Bool) -> DialectProfile { waha ? .wahaPlusGows : .wuzapiCurrent }

    /// WAHA: the engine behind the API, as `version.engine` and sessions report it.
    var wahaEngine: String {
        switch self {
        case .wahaCoreWebjs: "WEBJS"
        case .wahaCoreNoweb: "NOWEB"
        default: "GOWS"
        }
    }

    var isWahaCore: Bool { self == .wahaCoreWebjs || self == .wahaCoreNoweb }
    var wahaVersion: String { isWahaCore ? "2024.10.8" : "2025.6.1" }

    /// Whether this version signs its webhooks; the others post to the session's secret URL.
    var signsWebhooks: Bool { self == .wahaPlusGows || self == .wuzapiCurrent }

    /// WAHA endpoints this engine does not implement (`NotImplementedByEngineError`).
    var wahaMissing: Set<String> { self == .wahaCoreWebjs ? ["/api/sendPoll", "/api/sendContactVcard"] : [] }

    /// wuzapi endpoints this version does not route.
    var wuzapiMissing: Set<String> { self == .wuzapi202505 ? ["/chat/send/edit", "/chat/send/poll"] : [] }
}

/// The profile a dialect router answers with, switched by `POST /sim/profile`.
public final class ProfileBox: Sendable {
    private let value: NIOLockedValueBox<DialectProfile>

    public init(_ profile: DialectProfile) { value = NIOLockedValueBox(profile) }

    public var profile: DialectProfile {
        get { value.withLockedValue { $0 } }
        set { value.withLockedValue { $0 = newValue } }
    }
}
