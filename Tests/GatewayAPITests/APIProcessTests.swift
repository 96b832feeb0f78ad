import Foundation
import OutboxCore
import OutboxStore
import PostgresClient
import Simulator
import Testing
import TestSupport

/// The gateway as deployed: two `wa-outbox api` processes behind one address, two workers, one
/// database, and clients that spread their requests over both API processes.
@Suite("API processes", .serialized)
struct APIProcessTests {
    static let terminal: Set<String> = StatusEvent.finalStatuses
    /// A liveness bound for a whole run on a loaded CI machine, never a measured time.
    static let liveness = Duration.seconds(300)

    struct Send: Sendable {
        var org: String
        var session: String
        var chat: Int
        var port: Int
    }

    static func text(chat: Int, _ text: String) -> String {
        #"{"type":"text","chat":"\#(4915100000000 + chat)@s.whatsapp.net","text":"\#(text)"}"#
    }

    /// 2,500 async sends per organization, spread over both API processes; each send's final
    /// event arrives exactly once on its own organization's stream (read through either process)
    /// and never on the other's, and a client that hangs up mid-run and resumes on the other
    /// process with `Last-Event-ID` gets every event once. The streams are compared with the log.
    @Test func fiveThousandAsyncSendsReachTheirOwnOrganizationsStreamExactlyOnce() async throws {
        let orgs = ["orgA", "orgB"]
        let sessions = orgs.flatMap { org in (0..<10).map { (org: org, id: "\(org)-s\($0)") } }
        try await LiveGateway.run(apis: 2, workers: 2, sessions: sessions) { gateway in
            var created: [String: String] = [:]
            for org in orgs { created[org] = try await gateway.createKey(org: org) }
            let keys = created
            let deadline = ContinuousClock.now + Self.liveness
            // Each stream ends at its organization's sentinel: one more send, made once every other
            // send is final. Its final event is the organization's last event.
            let sentinels = Box<[String: String]>([:])
            func stream(_ org: String, ports: [Int], dropAfter: Int? = nil) -> Task<ResumingStream.Received, any Error> {
                let client = ResumingStream(ports: ports, path: "/api/v1/events?after=0", headers: [("Authorization", "Bearer \(keys[org]!)")])
                return Task {
                    try await client.read(until: deadline, dropAfter: dropAfter) { messages in
                        guard let sentinel = sentinels.current[org] else { return false }
                        return messages.contains { $0.json?["outboxId"] as? String == sentinel && Self.terminal.contains($0.json?["status"] as? String ?? "") }
                    }
                }
            }
            let ports = gateway.ports
            let streams = ["orgA": stream("orgA", ports: ports), "orgB": stream("orgB", ports: ports.reversed())]
            let resuming = stream("orgA", ports: ports.reversed(), dropAfter: 1_500)

            let started = ContinuousClock.now
            // Send i: organization i % 2, its session i / 2 % 10, the API process i / 20 % 2.
            let sends: [Send] = (0..<5_000).map { i in
                let org = orgs[i % 2]
                return Send(org: org, session: "\(org)-s\(i / 2 % 10)", chat: i % 7, port: ports[i / 20 % 2])
            }
            let outboxIDs = try await withThrowingTaskGroup(of: (String, String?).self) { group in
                var accepted: [String: [String]] = [:]
                func collect(_ answer: (String, String?)) {
                    #expect(answer.1 != nil, "a send to \(answer.0) was not accepted")
                    if let id = answer.1 { accepted[answer.0, default: []].append(id) }
                }
                for (i, send) in sends.enumerated() {
                    if i >= 32, let answer = try await group.next() { collect(answer) }
                    group.addTask {
                        let answer = try await request(port: send.port, method: "POST", "/api/v1/sessions/\(send.session)/messages?async=true",
                                                       headers: [("Authorization", "Bearer \(keys[send.org]!)"), ("Content-Type", "application/json")],
                                                       body: Self.text(chat: send.chat, "message \(i)"), timeout: .seconds(60), client: .wide)
                        guard answer.status == 202 else { return (send.org, nil) }
                        return (send.org, try JSONDecoder().decode(SendResult.self, from: Data(answer.body.utf8)).outboxId)
                    }
                }
                for try await answer in group { collect(answer) }
                return accepted
            }
            let acceptedIn = ContinuousClock.now - started
            while try await gateway.count("SELECT count(*) FROM wa_outbox.jobs WHERE state IN ('succeeded', 'failed', 'canceled')") < 5_000 {
                try #require(ContinuousClock.now < deadline, "the 5,000 jobs did not end within \(Self.liveness)")
                try await Task.sleep(for: .milliseconds(100))
            }
            let finalIn = ContinuousClock.now - started
            var marks: [String: String] = [:]
            for (index, org) in orgs.enumerated() {
                let answer = try await request(port: ports[index], method: "POST", "/api/v1/sessions/\(org)-s0/messages?async=true",
                                               headers: [("Authorization", "Bearer \(keys[org]!)"), ("Content-Type", "application/json")],
                                               body: Self.text(chat: 0, "sentinel"), timeout: .seconds(60))
                try #require(answer.status == 202, "sentinel: \(answer.status) \(answer.body)")
                marks[org] = try JSONDecoder().decode(SendResult.self, from: Data(answer.body.utf8)).outboxId
            }
            sentinels.set(marks)

            var received: [String: ResumingStream.Received] = [:]
            for (org, task) in streams { received[org] = try await task.value }
            let resumed = try await resuming.value
            print("""
                two APIs, two workers: 5,000 async sends accepted in \(acceptedIn), all final after \(finalIn); \
                stream connections: orgA \(received["orgA"]!.connections), orgB \(received["orgB"]!.connections), \
                the resuming client \(resumed.connections)
                """)

            for org in orgs {
                let ours = Set((outboxIDs[org] ?? []) + [marks[org]!])
                let theirs = Set(outboxIDs.filter { $0.key != org }.values.joined())
                #expect(ours.count == 2_501)
                for (name, client) in [("\(org) stream", received[org]!)] + (org == "orgA" ? [("resuming \(org) stream", resumed)] : []) {
                    try await expectMatchesLog(client, org: org, gateway: gateway, name: name)
                    let finals = client.events.compactMap { event -> String? in
                        guard let json = event.json, Self.terminal.contains(json["status"] as? String ?? "") else { return nil }
                        return json["outboxId"] as? String
                    }
                    #expect(finals.count == ours.count && Set(finals) == ours, "\(name): each send's final event exactly once")
                    #expect(client.events.allSatisfy { !theirs.contains($0.json?["outboxId"] as? String ?? "") }, "\(name): another organization's event")
                }
            }
            #expect(resumed.connections >= 2, "the resuming client never resumed")
            #expect(try await gateway.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'") == 5_002)
            let delivered = try await gateway.simulator.deliveries().map(\.id)
            #expect(delivered.count == 5_002 && Set(delivered).count == 5_002, "each message dispatched once")
        }
    }

    /// Every message.status event of `org` in the log arrived on the stream exactly once, and nothing else did.
    func expectMatchesLog(_ client: ResumingStream.Received, org: String, gateway: LiveGateway, name: String) async throws {
        let logged = try await gateway.database.query("""
            SELECT job_id::text, status FROM wa_outbox.events WHERE org = \(org) AND kind <> 'session'
            """).map { "\(try $0.decode(String.self, at: 0)) \(try $0.decode(String.self, at: 1))" }
        let streamed = client.events.map { "\($0.json?["outboxId"] as? String ?? "?") \($0.json?["status"] as? String ?? "?")" }
        let expected = Dictionary(logged.map { ($0, 1) }, uniquingKeysWith: +)
        let got = Dictionary(streamed.map { ($0, 1) }, uniquingKeysWith: +)
        let missing = expected.filter { got[$0.key, default: 0] < $0.value }.keys.sorted()
        let extra = got.filter { expected[$0.key, default: 0] < $0.value }.keys.sorted()
        #expect(missing.isEmpty, "\(name): \(missing.count) events of the log never arrived, e.g. \(missing.prefix(5))")
        #expect(extra.isEmpty, "\(name): \(extra.count) events arrived more often than logged, e.g. \(extra.prefix(5))")
        let ids = client.events.compactMap(\.lastEventID)
        #expect(ids.count == client.events.count && Set(ids).count == ids.count, "\(name): every event has an id of its own")
    }

    /// One Idempotency-Key, 50 concurrent requests split over two API processes: one job, one dispatch.
    @Test func fiftyConcurrentRequestsWithOneKeyOverTwoAPIsMakeOneJobAndOneDispatch() async throws {
        try await LiveGateway.run(apis: 2, workers: 1, sessions: [(org: "org1", id: "s1")]) { gateway in
            let key = try await gateway.createKey(org: "org1")
            let ports = gateway.ports
            let answers = try await withThrowingTaskGroup(of: (Int, String).self) { group in
                for i in 0..<50 {
                    group.addTask {
                        try await request(port: ports[i % 2], method: "POST", "/api/v1/sessions/s1/messages?async=true",
                                          headers: [("Authorization", "Bearer \(key)"), ("Content-Type", "application/json"), ("Idempotency-Key", "burst")],
                                          body: Self.text(chat: 1, "once"), timeout: .seconds(60), client: .wide)
                    }
                }
                return try await group.reduce(into: [(Int, String)]()) { $0.append($1) }
            }
            #expect(answers.allSatisfy { $0.0 == 202 }, "every request gets the one result: \(Set(answers.map(\.0)))")
            let results = answers.compactMap { try? JSONDecoder().decode(SendResult.self, from: Data($0.1.utf8)) }
            #expect(results.count == 50)
            #expect(Set(results.map(\.outboxId)).count == 1)
            #expect(results.filter { !$0.replayed }.count == 1, "one request made the job, the others replayed it")

            let deadline = ContinuousClock.now + Self.liveness
            while try await gateway.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'") == 0 {
                try #require(ContinuousClock.now < deadline, "the job did not succeed within \(Self.liveness)")
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(try await gateway.count("SELECT count(*) FROM wa_outbox.jobs") == 1)
            #expect(try await gateway.simulator.stats().delivered == 1)
        }
    }
}
