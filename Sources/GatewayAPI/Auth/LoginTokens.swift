import Foundation
import JWTKit
import Logging

/// Verifies a frontend-minted login JWT and reads the person's organization and role from it.
///
/// The header must name a `kid` the JWKS has (`JWKSKeys`); jwt-kit checks the signature with that
/// key. Then `exp` (required), `nbf`, `iss` and `aud` (when configured) are checked here, with the
/// configured leeway for clock differences.
public struct LoginTokens: Sendable {
    public let configuration: GatewayAuthConfiguration.JWT
    public let keys: JWKSKeys

    public init(configuration: GatewayAuthConfiguration.JWT, keys: JWKSKeys) {
        self.configuration = configuration
        self.keys = keys
    }

    /// Why a token was refused: said to the caller, whose own token it is (never the token itself).
    public struct Refusal: Error, Sendable, Equatable {
        public var reason: String
    }

    public func principal(from token: String, now: Date = Date()) async throws(Refusal) -> Principal {
        guard let header = Self.header(of: token), let kid = header.kid else { throw Refusal(reason: "malformed login token, or one without a kid") }
        // Public-key algorithms only: a token can never make a JWKS key act as an HMAC secret, or go unsigned.
        guard let alg = header.alg, Self.acceptedAlgorithms.contains(alg) else { throw Refusal(reason: "login token algorithm not accepted") }
        let claims: LoginClaims
        do {
            let collection = try await keys.keys(for: kid)
            claims = try await collection.verify(token, as: LoginClaims.self)
        } catch let error as JWKSKeys.Failure where error == .unknownKey {
            throw Refusal(reason: "login token signed with an unknown key")
        } catch {
            throw Refusal(reason: "login token signature or format invalid")
        }
        let leeway = Double(configuration.leeway.components.seconds)
        guard let exp = claims.number("exp") else { throw Refusal(reason: "login token has no exp") }
        guard now.timeIntervalSince1970 < exp + leeway else { throw Refusal(reason: "login token expired") }
        if let nbf = claims.number("nbf"), now.timeIntervalSince1970 + leeway < nbf { throw Refusal(reason: "login token not valid yet") }
        if let issuer = configuration.issuer, claims.strings("iss") != [issuer] { throw Refusal(reason: "login token from another issuer") }
        if let audience = configuration.audience, !claims.strings("aud").contains(audience) {
            throw Refusal(reason: "login token meant for another audience")
        }
        guard let org = claims.strings(configuration.orgClaim).first, !org.isEmpty, claims.strings(configuration.orgClaim).count == 1 else {
            throw Refusal(reason: "login token names no organization in claim '\(configuration.orgClaim)'")
        }
        let capabilities = claims.strings(configuration.roleClaim).reduce(into: Set<Capability>()) { $0.formUnion(configuration.roles[$1] ?? []) }
        return Principal(org: org, capabilities: capabilities, subject: "jwt:" + (claims.strings("sub").first ?? "?"))
    }

    static let acceptedAlgorithms: Set<String> = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]

    /// The header of a compact JWS, read before anything is verified.
    static func header(of token: String) -> Header? {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let data = Data(base64URL: parts[0]) else { return nil }
        return try? JSONDecoder().decode(Header.self, from: data)
    }

    struct Header: Decodable {
        var kid: String?
        var alg: String?
    }
}

/// Every top-level claim of a login token that is a string, an array of strings or a number; the
/// claim names are configuration, so they are read by name after decoding.
struct LoginClaims: JWTPayload {
    enum Value: Sendable, Equatable {
        case strings([String])
        case number(Double)
    }

    var claims: [String: Value] = [:]

    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Key.self)
        for key in container.allKeys {
            if let string = try? container.decode(String.self, forKey: key) {
                claims[key.stringValue] = .strings([string])
            } else if let strings = try? container.decode([String].self, forKey: key) {
                claims[key.stringValue] = .strings(strings)
            } else if let number = try? container.decode(Double.self, forKey: key) {
                claims[key.stringValue] = .number(number)
            }
        }
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Key.self)
        for (name, value) in claims {
            switch value {
            case .strings(let strings): try container.encode(strings, forKey: Key(stringValue: name))
            case .number(let number): try container.encode(number, forKey: Key(stringValue: name))
            }
        }
    }

    /// The claims are checked by `LoginTokens`, which knows the configuration.
    func verify(using algorithm: some JWTAlgorithm) async throws {}

    func strings(_ name: String) -> [String] {
        if case .strings(let strings) = claims[name] { strings } else { [] }
    }

    func number(_ name: String) -> Double? {
        if case .number(let number) = claims[name] { number } else { nil }
    }
}

extension Data {
    /// Base64url without padding, as JWTs carry it.
    init?(base64URL text: Substring) {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        self.init(base64Encoded: base64)
    }
}
