import Foundation
import PostgresClient
import Testing
import TestSupport

/// Malformed HTTP at the byte level, against a live `wa-outbox api` process: truncated bodies,
/// lying or conflicting lengths, broken chunking, NUL and invalid UTF-8 where they cannot be,
/// huge headers and bodies, half-sent requests. No answer is a 5xx, the process never exits, and
/// a well-formed send afterwards is queued and sent.
@Suite("Hostile input: a live API process")
struct HostileProcessTests {
    /// Each case: a name and the raw bytes (Python bytes literal) sent on a fresh connection,
    /// which is then read (2 s at most) and closed. `{key}` is the API key.
    static let script = #"""
import socket, sys
port, key = int(sys.argv[1]), sys.argv[2]
good = b'{"type":"text","chat":"4915112345678@s.whatsapp.net","text":"hello"}'
def req(method, path, headers, body=b''):
    path = path if isinstance(path, bytes) else path.encode()
    head = method.encode() + b' ' + path + f' HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n'.encode()
    return head + b''.join(h + b'\r\n' for h in headers) + b'\r\n' + body
post = '/api/v1/sessions/s1/messages?async=true'
cases = {
    'truncated body': req('POST', post, [b'Content-Type: application/json', b'Content-Length: 1000'], good[:20]),
    'truncated body mid-character': req('POST', post, [b'Content-Type: application/json', b'Content-Length: 100'], good[:40] + '\u00e9'.encode()[:1]),
    'length shorter than the body': req('POST', post, [b'Content-Type: application/json', b'Content-Length: 10'], good),
    'negative length': req('POST', post, [b'Content-Type: application/json', b'Content-Length: -5'], good),
    'huge length': req('POST', post, [b'Content-Type: application/json', b'Content-Length: 99999999999999'], good),
    'two lengths': req('POST', post, [b'Content-Type: application/json', b'Content-Length: 5', b'Content-Length: 70'], good),
    'length and chunked': req('POST', post, [b'Content-Type: application/json', b'Content-Length: 4', b'Transfer-Encoding: chunked'], b'zz\r\n' + good),
    'broken chunk size': req('POST', post, [b'Content-Type: application/json', b'Transfer-Encoding: chunked'], b'zz\r\nabc\r\n0\r\n\r\n'),
    'chunked cut short': req('POST', post, [b'Content-Type: application/json', b'Transfer-Encoding: chunked'], b'1000\r\n' + good),
    'NUL in a header': req('POST', post, [b'Content-Type: application/json', b'Idempotency-Key: a\x00b', b'Content-Length: %d' % len(good)], good),
    'NUL in the path': req('POST', '/api/v1/sessions/s1\x00/messages', [b'Content-Length: %d' % len(good)], good),
    'invalid UTF-8 in the path': req('POST', b'/api/v1/sessions/s\xff1/messages', [b'Content-Length: %d' % len(good)], good),
    'invalid UTF-8 body': req('POST', post, [b'Content-Type: application/json', b'Content-Length: 20'], b'{"type":"text\xff\xfe"}'),
    'wrong content type': req('POST', post, [b'Content-Type: text/plain', b'Content-Length: %d' % len(good)], good),
    'huge header': req('POST', post, [b'X-Big: ' + b'a' * 100000, b'Content-Length: %d' % len(good)], good),
    'many headers': req('POST', post, [b'X-F%d: 1' % i for i in range(300)] + [b'Content-Length: %d' % len(good)], good),
    'huge body': req('POST', post, [b'Content-Type: application/json', b'Content-Length: %d' % (4 << 20)], b'{"a":"' + b'x' * (4 << 20)),
    'deep nesting': req('POST', post, [b'Content-Type: application/json', b'Content-Length: %d' % 200000], b'[' * 100000 + b']' * 100000),
    'garbage request line': b'\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03' + b'\x00' * 64,
    'HTTP/0.9': b'GET /healthz\r\n\r\n',
    'half a request line': b'POST /api/v1/sess',
    'headers never end': req('POST', post, [b'Content-Length: 5'])[:-2],
    'unknown method': req('BREW', post, [b'Content-Length: 0']),
    'absolute URI to elsewhere': req('POST', 'http://169.254.169.254/latest', [b'Content-Length: 0']),
}
for name, data in cases.items():
    s = socket.create_connection(('127.0.0.1', port), timeout=5)
    try:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    s.settimeout(2)
    answer = b''
    try:
        while len(answer) < 65536:
            chunk = s.recv(65536)
            if not chunk: break
            answer += chunk
    except (socket.timeout, OSError):
        pass
    s.close()
    status = answer.split(b'\r\n', 1)[0].decode('latin-1') if answer else '(closed)'
    print(f'{name}\t{status}')
"""#

    @Test func malformedHTTPNeverCrashesTheAPIOrAnswers5xx() async throws {
        try await LiveGateway.run(apis: 1, workers: 1, sessions: [(org: "org1", id: "s1")]) { gateway in
            let key = try await gateway.createKey(org: "org1")
            let port = gateway.ports[0]
            let run = try await Subprocess.run(URL(fileURLWithPath: "/usr/bin/env"), ["python3", "-c", Self.script, String(port), key])
            #expect(run.status == 0, "\(run.output)")
            let lines = run.output.split(separator: "\n").map { $0.split(separator: "\t", maxSplits: 1).map(String.init) }.filter { $0.count == 2 }
            print("hostile-input cases: raw HTTP against a live API \(lines.count)")
            #expect(lines.count == 24, "\(run.output)")
            for line in lines {
                #expect(!line[1].hasPrefix("HTTP/1.1 5") && !line[1].hasPrefix("HTTP/1.0 5"), "\(line[0]): \(line[1])")
            }
            let answers = Dictionary(lines.map { ($0[0], $0[1]) }, uniquingKeysWith: { $1 })
            #expect(answers["wrong content type"]?.hasPrefix("HTTP/1.1 400") == true)
            #expect(answers["huge header"]?.hasPrefix("HTTP/1.1 431") == true)
            #expect(answers["many headers"]?.hasPrefix("HTTP/1.1 431") == true)
            #expect(answers["deep nesting"]?.hasPrefix("HTTP/1.1 400") == true)
            #expect(gateway.apis[0].process.isRunning, "the API is still running: \(gateway.apis[0].stderr.suffix(2_000))")
            let sent = try await request(port: port, method: "POST", "/api/v1/sessions/s1/messages?async=true",
                                         headers: [("Authorization", "Bearer \(key)"), ("Content-Type", "application/json")],
                                         body: #"{"type":"text","chat":"4915112345678@s.whatsapp.net","text":"after"}"#)
            #expect(sent.status == 202, "\(sent.body)")
            let deadline = ContinuousClock.now + .seconds(60)
            while try await gateway.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'") < 1, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(100))
            }
            // Only the well-formed send became a job (the body shorter than its length stops at 10 bytes, invalid JSON).
            #expect(try await gateway.count("SELECT count(*) FROM wa_outbox.jobs") == 1)
            #expect(try await gateway.count("SELECT count(*) FROM wa_outbox.jobs WHERE state = 'succeeded'") == 1)
        }
    }
}
