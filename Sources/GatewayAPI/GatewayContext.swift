import Hummingbird

/// What a caller may do through the gateway API.
public enum Capability: String, Sendable, Codable, CaseIterable {
    /// Send, edit and revoke messages; read one's own messages and events.
    case send
    /// Read messages and events only.
    case read
    /// Operate the queue (replay, cancel, pause sessions).
    case operate
}

/// Who is calling: an organization and what it may do, from an API key or a login JWT.
public struct Principal: Sendable, Equatable {
    public var org: String
    public var capabilities: Set<Capability>
    /// The API key's prefix or the JWT's subject: for logs and audit, never a secret.
    public var subject: String

    public init(org: String, capabilities: Set<Capability>, subject: String) {
        self.org = org
        self.capabilities = capabilities
        self.subject = subject
    }
}

/// The request context of every gateway route: the core context plus the authenticated caller.
public struct GatewayContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// Set by the authentication middleware; nil until then.
    public var principal: Principal?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        principal = nil
    }

    /// The largest valid payload (a text of 65,536 characters, up to 4 bytes each, or 20 vCards)
    /// fits in 512 KiB; a larger body answers 413 before it is read whole.
    public var maxUploadSize: Int { 512 * 1024 }
}
