import Foundation
import OutboxCore
import Simulator
import Testing
import TestSupport

@Suite("Simulator delivery log")
struct DeliveryLogTests {
    /// Many concurrent sends, more than one write's worth of lines: after `flush`, the log holds
    /// every delivery once.
    @Test func recordsEveryDeliveryAfterFlush() async throws {
        let log = try TestEnvironment.scratchDirectory("delivery-log").appendingPathComponent("log.jsonl")
        let simulator = try WhatsAppSimulator(deliveryLog: log)
        let count = 4_000
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<8 {
                group.addTask {
                    for index in stride(from: task, to: count, by: 8) {
                        _ = try await simulator.perform(.send(id: "M\(index)", chat: "49151\(index % 50)@s.whatsapp.net", content: .text("message \(index)")),
                                                        session: "s\(task)")
                    }
                }
            }
            try await group.waitForAll()
        }
        await simulator.flush()
        let ids = try String(contentsOf: log, encoding: .utf8).split(separator: "\n")
            .map { try JSONDecoder().decode(Delivery.self, from: Data($0.utf8)).id }
        #expect(ids.count == count)
        #expect(Set(ids) == Set((0..<count).map { "M\($0)" }))
    }
}
