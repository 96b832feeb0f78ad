import Foundation

/// A payload no layer may accept: what a send, edit or revoke carries, made wrong in one of the
/// ways issue 18 lists. The property tests (SQL function, Swift library, HTTP API) draw these from
/// `HostileInput.payload(using:)` and check that each is refused and changes nothing.
public struct HostilePayload: Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable { case send, edit, revoke }

    public var category: String
    public var kind: Kind
    /// The payload as JSON text, or as raw bytes when it is not even UTF-8 (`bytes` set).
    public var json: String
    public var bytes: [UInt8]?
    /// Whether PostgreSQL can read it as jsonb at all: if not, the type input refuses it before
    /// `wa_outbox.enqueue` runs (22P02 invalid JSON, 22P05 or 22021 NUL or bad UTF-8, 22003 a number
    /// past numeric's range, 54001 too deep).
    public var parsesAsJSONB: Bool

    public var description: String {
        let shown = bytes.map { "bytes \($0.prefix(80))" } ?? String(json.prefix(160))
        return "\(category) \(kind.rawValue) (\(json.utf8.count) bytes): \(shown)"
    }

    /// The body as it goes over HTTP.
    public var body: [UInt8] { bytes ?? Array(json.utf8) }
}

/// A small seeded generator, so a failing case is reproducible from the seed the property test prints.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

public enum HostileInput {
    public static let goodChat = "4915112345678@s.whatsapp.net"

    /// Characters that break naive SQL, JSON and shell handling.
    public static let metacharacters = ["'", "\"", ";", "--", "/*", "*/", "\\", "%", "_", "$$", "`", "\\x00", "' OR '1'='1",
                                        "'; DROP TABLE wa_outbox.jobs; --", "\"); DELETE FROM wa_outbox.sessions; --",
                                        "$1", "E'\\\\'", "::jsonb", "|| pg_sleep(10) ||", "\u{2028}", "\u{FEFF}"]

    static let categories: [(String, @Sendable (inout SplitMix64) -> HostilePayload)] = [
        ("oversized text", oversizedText), ("poll option count", pollCount), ("poll duplicates", pollDuplicates),
        ("coordinates out of range", coordinatesOutOfRange), ("coordinates not numbers", coordinatesNotNumbers),
        ("malformed JID", malformedJIDPayload), ("malformed vCard", malformedVCard), ("NUL character", nulCharacter),
        ("invalid UTF-8", invalidUTF8), ("SQL metacharacters", sqlMetacharacters), ("deeply nested JSON", deeplyNested),
        ("truncated JSON", truncated), ("wrong JSON shape", wrongShape), ("bad edit or revoke", badTargeting),
    ]

    public static var categoryNames: [String] { categories.map(\.0) }

    /// One hostile payload, of a category chosen at random.
    public static func payload(using rng: inout SplitMix64) -> HostilePayload {
        let pick = Int.random(in: 0..<categories.count, using: &rng)
        return categories[pick].1(&rng)
    }

    // MARK: - Pieces

    static func json(_ object: [String: Any]) -> String {
        String(decoding: try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .fragmentsAllowed]), as: UTF8.self)
    }

    static func send(_ category: String, _ object: [String: Any]) -> HostilePayload {
        HostilePayload(category: category, kind: .send, json: json(object), parsesAsJSONB: true)
    }

    static func randomText(_ count: Int, using rng: inout SplitMix64) -> String {
        let alphabet = Array("abc xyz ÄÖÜ ß é 中文 🙂 \n\t'\"\\;")
        return String((0..<count).map { _ in alphabet.randomElement(using: &rng)! })
    }

    static func word(using rng: inout SplitMix64) -> String {
        "w" + randomText(Int.random(in: 0...12, using: &rng), using: &rng)
    }

    // MARK: - Categories

    static func oversizedText(_ rng: inout SplitMix64) -> HostilePayload {
        let count = Int.random(in: 65_537...70_000, using: &rng)
        let unit = ["a", "é", "中", "🙂", "'"].randomElement(using: &rng)!
        return send("oversized text", ["type": "text", "chat": goodChat, "text": String(repeating: unit, count: count)])
    }

    static func pollCount(_ rng: inout SplitMix64) -> HostilePayload {
        let count = [0, 1, 13, 14, 20, 50, 200].randomElement(using: &rng)!
        let options = (0..<count).map { "option \($0)" }
        return send("poll option count", ["type": "poll", "chat": goodChat, "name": "which?", "options": options])
    }

    static func pollDuplicates(_ rng: inout SplitMix64) -> HostilePayload {
        var options = (0..<Int.random(in: 2...11, using: &rng)).map { "answer \($0)" }
        switch Int.random(in: 0..<3, using: &rng) {
        case 0: options.insert(options.randomElement(using: &rng)!, at: Int.random(in: 0...options.count, using: &rng))
        case 1: options[Int.random(in: 0..<options.count, using: &rng)] = ["", " ", "\t"].randomElement(using: &rng)!
        default:
            var object: [String: Any] = ["type": "poll", "chat": goodChat, "name": "q", "options": options]
            object["options"] = options.map { _ -> Any in ([1, NSNull(), true, ["x"], ["k": "v"]] as [Any]).randomElement(using: &rng)! }
            return send("poll duplicates", object)
        }
        return send("poll duplicates", ["type": "poll", "chat": goodChat, "name": "q", "options": options])
    }

    static func coordinatesOutOfRange(_ rng: inout SplitMix64) -> HostilePayload {
        let latitude: Double = Bool.random(using: &rng) ? Double.random(in: 90.000001...1e9, using: &rng) * (Bool.random(using: &rng) ? 1 : -1)
                                                        : Double.random(in: -90...90, using: &rng)
        let longitude: Double = abs(latitude) > 90 ? Double.random(in: -180...180, using: &rng)
                                                   : Double.random(in: 180.000001...1e9, using: &rng) * (Bool.random(using: &rng) ? 1 : -1)
        if Int.random(in: 0..<4, using: &rng) == 0 {
            // Numbers no double holds: PostgreSQL's numeric reads them, a cast to float8 overflowed.
            let huge = ["1e400", "-1e309", "9e999999", "1" + String(repeating: "0", count: 400)].randomElement(using: &rng)!
            let text = #"{"chat":"\#(goodChat)","latitude":\#(huge),"longitude":0,"type":"location"}"#
            // 9e999999 is past even numeric's range: jsonb's input refuses it (22003).
            return HostilePayload(category: "coordinates out of range", kind: .send, json: text, parsesAsJSONB: huge != "9e999999")
        }
        return send("coordinates out of range", ["type": "location", "chat": goodChat, "latitude": latitude, "longitude": longitude])
    }

    static func coordinatesNotNumbers(_ rng: inout SplitMix64) -> HostilePayload {
        let bad: [Any] = ["52.52", "north", NSNull(), true, [52.5], ["lat": 1], "", "NaN", "Infinity"]
        var object: [String: Any] = ["type": "location", "chat": goodChat, "latitude": 52.5, "longitude": 13.4]
        switch Int.random(in: 0..<3, using: &rng) {
        case 0: object["latitude"] = bad.randomElement(using: &rng)!
        case 1: object["longitude"] = bad.randomElement(using: &rng)!
        default: object.removeValue(forKey: Bool.random(using: &rng) ? "latitude" : "longitude")
        }
        return send("coordinates not numbers", object)
    }

    /// A JID the rules refuse: a valid one with one change that no normalization undoes.
    public static func malformedJID(using rng: inout SplitMix64) -> String {
        let digits = String((0..<Int.random(in: 5...20, using: &rng)).map { _ in "0123456789".randomElement(using: &rng)! })
        switch Int.random(in: 0..<9, using: &rng) {
        case 0: return digits                                              // no domain
        case 1: return digits + "@" + ["whatsapp.net", "s.whatsapp.com", "g.us.evil", "c.uss", "lid.", "", "@s.whatsapp.net"].randomElement(using: &rng)!
        case 2: return String(digits.prefix(Int.random(in: 0...4, using: &rng))) + "@s.whatsapp.net"  // too short
        case 3: return digits + String(repeating: "1", count: 21) + "@s.whatsapp.net"  // too long
        case 4: return String(digits.prefix(3)) + ["a", "+", " ", "٣", "-", "'", ";"].randomElement(using: &rng)! + String(digits.dropFirst(3)) + "@s.whatsapp.net"
        case 5: return "@s.whatsapp.net"
        case 6: return digits + "@s.whatsapp.net" + metacharacters.randomElement(using: &rng)!
        case 7: return metacharacters.randomElement(using: &rng)! + "@g.us"
        default: return digits + "@s.whatsapp.net\n" + digits + "@g.us"
        }
    }

    static func malformedJIDPayload(_ rng: inout SplitMix64) -> HostilePayload {
        let jid = malformedJID(using: &rng)
        if Bool.random(using: &rng) {
            return send("malformed JID", ["type": "text", "chat": jid, "text": "hello"])
        }
        return HostilePayload(category: "malformed JID", kind: .revoke,
                              json: json(["chat": goodChat, "messageId": "3EB0AAAA", "sender": jid]), parsesAsJSONB: true)
    }

    static func malformedVCard(_ rng: inout SplitMix64) -> HostilePayload {
        let good = "BEGIN:VCARD\nVERSION:3.0\nFN:Jane Doe\nTEL;type=CELL;waid=911111111111:+911111111111\nEND:VCARD"
        let vcard: String = switch Int.random(in: 0..<7, using: &rng) {
        case 0: String(good.dropFirst(Int.random(in: 1...11, using: &rng)))           // no BEGIN line
        case 1: String(good.dropLast(Int.random(in: 1...9, using: &rng)))             // no END line
        case 2: good.replacingOccurrences(of: "FN:Jane Doe\n", with: "")              // no name
        case 3: "BEGIN:VCARDX" + String(good.dropFirst(11))
        case 4: "BEGIN:VCARD" + randomText(Int.random(in: 0...40, using: &rng), using: &rng)
        case 5: "BEGIN:VCARD\nFN:x\nEND:VCARD" + String(repeating: "x", count: 65_536)
        default: good.replacingOccurrences(of: "\n", with: " ")
        }
        var contact: [String: Any] = ["name": "Jane", "vcard": vcard]
        var contacts: [[String: Any]] = [contact]
        switch Int.random(in: 0..<4, using: &rng) {
        case 0: break
        case 1: contact = ["name": ["", " ", "\n"].randomElement(using: &rng)!, "phone": "+4915112345678"]; contacts = [contact]
        case 2: contacts = Array(repeating: ["name": "A", "phone": "+4915112345678"], count: [0, 21, 40].randomElement(using: &rng)!)
        default: contacts = [["name": "A", "phone": ["12", "phone", "+49 151 ☎", "1234567890123456789012345678901", ""].randomElement(using: &rng)!]]
        }
        return send("malformed vCard", ["type": "contact", "chat": goodChat, "contacts": contacts])
    }

    static func nulCharacter(_ rng: inout SplitMix64) -> HostilePayload {
        let field = ["text", "chat", "type"].randomElement(using: &rng)!
        var object: [String: Any] = ["type": "text", "chat": goodChat, "text": "hello"]
        object[field] = (object[field] as! String) + "\u{0}" + word(using: &rng)
        // JSONSerialization writes NUL as \u0000: valid JSON that jsonb cannot store (22P05).
        return HostilePayload(category: "NUL character", kind: .send, json: json(object), parsesAsJSONB: false)
    }

    static func invalidUTF8(_ rng: inout SplitMix64) -> HostilePayload {
        let broken: [[UInt8]] = [[0xFF], [0xC3], [0xC0, 0xAF], [0xED, 0xA0, 0x80], [0xF8, 0x88, 0x80, 0x80, 0x80], [0xE2, 0x82], [0x80]]
        var bytes = Array(#"{"type":"text","chat":"\#(goodChat)","text":"he"#.utf8)
        bytes += broken.randomElement(using: &rng)!
        bytes += Array(#"llo"}"#.utf8)
        return HostilePayload(category: "invalid UTF-8", kind: .send, json: String(decoding: bytes, as: UTF8.self), bytes: bytes, parsesAsJSONB: false)
    }

    static func sqlMetacharacters(_ rng: inout SplitMix64) -> HostilePayload {
        let meta = metacharacters.randomElement(using: &rng)!
        var object: [String: Any] = ["type": "text", "chat": goodChat, "text": "hello"]
        switch Int.random(in: 0..<4, using: &rng) {
        case 0: object["chat"] = goodChat + meta
        case 1: object["type"] = "text" + meta
        case 2: object = ["type": "location", "chat": goodChat, "latitude": "1" + meta, "longitude": 0]
        default: object = ["type": "poll", "chat": goodChat, "name": meta, "options": [meta, meta]]
        }
        return send("SQL metacharacters", object)
    }

    static func deeplyNested(_ rng: inout SplitMix64) -> HostilePayload {
        let depth = Bool.random(using: &rng) ? Int.random(in: 17...400, using: &rng) : Int.random(in: 400...5_000, using: &rng)
        let open = Bool.random(using: &rng)
        let nested = open ? String(repeating: "[", count: depth) + "1" + String(repeating: "]", count: depth)
                          : String(repeating: #"{"a":"#, count: depth) + "1" + String(repeating: "}", count: depth)
        let where_ = Int.random(in: 0..<3, using: &rng)
        let text = switch where_ {
        case 0: #"{"type":"text","chat":"\#(goodChat)","text":"hi","extra":\#(nested)}"#
        case 1: #"{"type":"text","chat":"\#(goodChat)","text":\#(nested)}"#
        default: #"{"type":"contact","chat":"\#(goodChat)","contacts":[{"name":"A","phone":"+4915112345678","x":\#(nested)}]}"#
        }
        return HostilePayload(category: "deeply nested JSON", kind: .send, json: text, parsesAsJSONB: true)
    }

    static func truncated(_ rng: inout SplitMix64) -> HostilePayload {
        let whole = json(["type": "poll", "chat": goodChat, "name": "q", "options": ["a", "b", "c"], "multipleAnswers": true])
        let cut = Int.random(in: 0..<whole.utf8.count, using: &rng)
        let text = String(decoding: Array(whole.utf8).prefix(cut), as: UTF8.self)
        return HostilePayload(category: "truncated JSON", kind: .send, json: text, parsesAsJSONB: false)
    }

    static func wrongShape(_ rng: inout SplitMix64) -> HostilePayload {
        let shapes = [#"[]"#, #"[{"type":"text"}]"#, #""text""#, "42", "null", "true", #"{}"#, #"{"type":"text"}"#,
                      #"{"type":"text","chat":4915112345678,"text":"x"}"#, #"{"type":"text","chat":"\#(goodChat)","text":42}"#,
                      #"{"type":["text"],"chat":"\#(goodChat)","text":"x"}"#, #"{"type":"text","chat":"\#(goodChat)","text":"   "}"#,
                      #"{"type":"poll","chat":"\#(goodChat)","name":"q","options":"a,b"}"#,
                      #"{"type":"poll","chat":"\#(goodChat)","name":"q","options":["a","b"],"multipleAnswers":"yes"}"#,
                      #"{"type":"contact","chat":"\#(goodChat)","contacts":{"name":"A"}}"#, #"{"type":"unknown","chat":"\#(goodChat)"}"#]
        return HostilePayload(category: "wrong JSON shape", kind: .send, json: shapes.randomElement(using: &rng)!, parsesAsJSONB: true)
    }

    static func badTargeting(_ rng: inout SplitMix64) -> HostilePayload {
        let edit = Bool.random(using: &rng)
        var object: [String: Any] = ["chat": goodChat, "messageId": "3EB0AAAA", "sentAt": Date().timeIntervalSince1970 - 60]
        if edit { object["text"] = "new text" }
        switch Int.random(in: 0..<5, using: &rng) {
        case 0: object["messageId"] = ([NSNull(), "", " ", 42, String(repeating: "A", count: 257)] as [Any]).randomElement(using: &rng)!
        case 1: object["sentAt"] = (["yesterday", -1, 1e300, true, [1]] as [Any]).randomElement(using: &rng)!
        case 2: object["chat"] = malformedJID(using: &rng)
        case 3:
            if edit { object["text"] = String(repeating: "x", count: Int.random(in: 65_537...66_000, using: &rng)) } else { object["sender"] = malformedJID(using: &rng) }
        default:
            if edit { object["text"] = ([NSNull(), "", " \n", 7] as [Any]).randomElement(using: &rng)! } else { object["chat"] = NSNull() }
        }
        return HostilePayload(category: "bad edit or revoke", kind: edit ? .edit : .revoke, json: json(object), parsesAsJSONB: true)
    }
}
