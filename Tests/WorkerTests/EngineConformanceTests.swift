import AsyncHTTPClient
@testable import Engines
import Foundation
import NIOCore
import NIOHTTP1
import OutboxCore
import OutboxStore
import Receipts
import Simulator
import Testing
import TestSupport

/// Every fixture of `Fixtures/engines/` replayed against the adapters (they send the fixture's
/// request and read its answer into the fixture's outcome) and against the simulator (it answers
/// as the fixture says the engine does).
@Suite("Engine conformance: the engines' own answers, against the adapters and the simulator", .serialized)
struct EngineConformanceTests {
    enum Result {
        case sent(EngineReceipt), status(EngineSessionStatus), reconciled([EngineReceipt]), failed(DispatchFailure)
    }

    static func run(_ fixture: EngineFixtureFile.Case, engine: String, baseURL: String) async -> Result {
        do throws(DispatchFailure) {
            let adapter: any SessionEngine = engine == "waha"
                ? WahaEngine(baseURL: baseURL, apiKey: "k3y", requestTimeout: .seconds(10))
                : WuzapiEngine(baseURL: baseURL, token: fixture.session, requestTimeout: .seconds(10))
            guard let operation = fixture.whatsAppOperation else { return .status(try await adapter.status(session: fixture.session)) }
            if fixture.kind == "reconcile" {
                return .reconciled(try await adapter.reconcile(operation, session: fixture.session, since: Date(timeIntervalSince1970: 0)))
            }
            return .sent(try await adapter.perform(operation, session: fixture.session))
        } catch {
            return .failed(error)
        }
    }

    /// What is wrong with `result` given the fixture's `expect`.
    static func problems(_ result: Result, _ expect: [String: Any]) -> [String] {
        var problems: [String] = []
        var message = ""
        switch result {
        case .sent(let receipt):
            guard let id = expect["sent"] as? String else { return ["sent \(receipt.messageID), expected \(expect)"] }
            if receipt.messageID != id { problems.append("message id \(receipt.messageID), expected \(id)") }
            if let key = expect["keyID"] as? String, MessageKey.keyID(of: receipt.messageID) != key { problems.append("key id of \(receipt.messageID) is not \(key)") }
            if let seconds = expect["timestamp"] as? Int, Int(receipt.timestamp.timeIntervalSince1970) != seconds {
                problems.append("timestamp \(receipt.timestamp.timeIntervalSince1970), expected \(seconds)")
            }
            return problems
        case .status(let status):
            return status.rawValue == expect["status"] as? String ? [] : ["status \(status.rawValue), expected \(expect)"]
        case .reconciled(let found):
            return ["reconciled \(found.map(\.messageID)), expected \(expect)"]
        case .failed(let failure):
            let wanted = (expect["fail"] ?? expect["refused"]) as? String
            switch failure {
            case .sessionNotConnected(let text):
                message = text
                if expect["wait"] == nil { problems.append("waits for the session (\(text)), expected \(expect)") }
            case .rateLimited:
                if expect["backoff"] == nil { problems.append("rate limited, expected \(expect)") }
            case .transient(let text), .timeout(let text):
                message = text
                if expect["retry"] == nil { problems.append("retries (\(text)), expected \(expect)") }
            case .permanent(let code, let text):
                message = text
                if code.rawValue != wanted { problems.append("fails with \(code.rawValue) (\(text)), expected \(expect)") }
            }
        }
        for word in expect["mentions"] as? [String] ?? [] where !message.lowercased().contains(word.lowercased()) {
            problems.append("the message '\(message)' does not say '\(word)'")
        }
        for word in expect["mustNotMention"] as? [String] ?? [] where message.contains(word) {
            problems.append("the message '\(message)' repeats '\(word)' from the echoed request")
        }
        return problems
    }

    static func json(_ data: Data) -> Any? {
        data.isEmpty ? nil : try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
    }

    @Test func everyFixtureAgainstTheAdapters() async throws {
        let server = try await CannedEngine.start()
        defer { server.stop() }
        var replayed = 0
        for file in try EngineFixtureFile.all() {
            for fixture in file.cases {
                let label = "\(file.file): \(fixture.name)"
                try server.answer(status: fixture.response?.status ?? 599, json: fixture.response?.body, text: fixture.response?.text)
                let result = await Self.run(fixture, engine: file.engine, baseURL: server.baseURL)
                let requests = server.requests
                if fixture.expect["refused"] != nil {
                    #expect(requests.isEmpty, "\(label): must be refused before dispatch, yet sent \(requests.map(\.path))")
                } else if let expected = fixture.request, fixture.adapterSends {
                    #expect(requests.count == 1, "\(label): \(requests.count) requests")
                    if let sent = requests.first {
                        #expect(sent.method == expected.method && sent.path == expected.path,
                                "\(label): sent \(sent.method) \(sent.path), expected \(expected.method) \(expected.path)")
                        #expect(JSONShape.equal(Self.json(sent.body), expected.body),
                                "\(label): sent \(String(decoding: sent.body, as: UTF8.self)), expected \(expected.body ?? "no body")")
                    }
                }
                for problem in Self.problems(result, fixture.expect) { Issue.record("\(label): \(problem)") }
                replayed += 1
            }
        }
        #expect(replayed >= 40)
    }

    @Test func everyWebhookFixtureGivesItsReceipts() throws {
        for file in try EngineFixtureFile.all() {
            let engine = try #require(ReceiptWebhook.Engine(rawValue: file.engine))
            for hook in file.webhooks {
                let json = try JSONSerialization.data(withJSONObject: hook.body, options: [.sortedKeys])
                let body = hook.form
                    ? Data(("jsonData=" + String(decoding: json, as: UTF8.self).addingPercentEncoding(withAllowedCharacters: .alphanumerics)! + "&token=t0ken").utf8)
                    : json
                // wuzapi's webhooks name no session: the URL does.
                let session = engine == .wuzapi ? hook.receipts.first?.session : nil
                let receipts = ReceiptWebhook.receipts(engine, body: body, session: session).map { "\($0.session) \($0.keyID) \($0.level)" }
                #expect(receipts == hook.receipts.map { "\($0.session) \($0.keyID) \($0.level)" }, "\(file.file): \(hook.name)")
            }
        }
    }

    @Test(arguments: ["waha", "wuzapi"])
    func everyFixtureAgainstTheSimulator(dialect: String) async throws {
        let simulator = try await HTTPSimulator.start(["--dialect", dialect])
        var replayed = 0
        for file in try EngineFixtureFile.all() where file.engine == dialect {
            for fixture in file.cases {
                guard let setup = fixture.simulator, let request = fixture.request, let expected = fixture.response else { continue }
                let label = "\(file.file): \(fixture.name)"
                try await simulator.post("/sim/profile", #"{"profile":"\#(setup["profile"] as? String ?? "")"}"#)
                try await simulator.setStatus(setup["status"] as? String ?? "connected", session: fixture.session)
                var call = HTTPClientRequest(url: simulator.baseURL + request.path)
                call.method = .init(rawValue: request.method)
                call.headers.add(name: "Token", value: fixture.session)
                if let body = request.body {
                    call.headers.add(name: "Content-Type", value: "application/json")
                    call.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: body)))
                }
                let response = try await HTTPClient.shared.execute(call, timeout: .seconds(10))
                let data = Data(try await response.body.collect(upTo: 1 << 20).readableBytesView)
                #expect(response.status.code == expected.status, "\(label): \(response.status.code) \(String(decoding: data, as: UTF8.self))")
                if let text = expected.text {
                    #expect(String(decoding: data, as: UTF8.self) == text, "\(label)")
                } else {
                    for problem in JSONShape.differences(Self.json(data), expected.body) { Issue.record("\(label): \(problem)") }
                }
                try await simulator.setStatus("connected", session: fixture.session)
                replayed += 1
            }
        }
        #expect(replayed >= 10)
        await simulator.stop()
    }
}
