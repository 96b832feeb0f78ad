import Testing
@testable import GatewayAPI

@Suite("Gateway context")
struct GatewayContextTests {
    @Test func capabilitiesAreDistinct() {
        #expect(Set(Capability.allCases.map(\.rawValue)).count == Capability.allCases.count)
    }
}
