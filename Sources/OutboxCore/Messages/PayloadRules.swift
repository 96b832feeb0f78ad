import Foundation

/// The rules of `wa_outbox.validate_payload` (migrations/0014), checked again when a claimed job is
/// decoded for dispatch: a row written around the function (by hand, or by an older schema) fails
/// alone with `validation_error` instead of reaching WhatsApp. Lengths count Unicode scalars, as
/// PostgreSQL's `length()` does.
enum PayloadRules {
    static let maxText = 65_536
    static let pollOptions = 2...12
    static let contactCount = 1...20
    /// Whether `text` is empty or only what `wa_outbox.is_blank` trims: ASCII whitespace (space,
    /// tab, newline, vertical tab, form feed, carriage return), each one UTF-8 byte.
    static func isBlank(_ text: String) -> Bool {
        text.utf8.allSatisfy { $0 == 0x20 || (0x09...0x0D).contains($0) }
    }

    static func text(_ text: String?, what: String) throws(OutboxError) -> String {
        guard let text, !isBlank(text) else {
            throw OutboxError(.validationError, "\(what) needs text")
        }
        guard text.unicodeScalars.count <= maxText else {
            throw OutboxError(.validationError, "text is longer than \(maxText) characters")
        }
        return text
    }

    static func poll(name: String?, options: [String]?) throws(OutboxError) -> (String, [String]) {
        guard let name, !isBlank(name), let options, pollOptions.contains(options.count) else {
            throw OutboxError(.validationError, "a poll needs a name and \(pollOptions.lowerBound) to \(pollOptions.upperBound) options")
        }
        guard options.allSatisfy({ !isBlank($0) }), Set(options).count == options.count else {
            throw OutboxError(.validationError, "poll options must be distinct, non-empty strings")
        }
        return (name, options)
    }

    static func location(latitude: Double?, longitude: Double?) throws(OutboxError) -> (Double, Double) {
        guard let latitude, let longitude, latitude.isFinite, longitude.isFinite,
              (-90...90).contains(latitude), (-180...180).contains(longitude) else {
            throw OutboxError(.validationError, "a location needs latitude within ±90 and longitude within ±180")
        }
        return (latitude, longitude)
    }

    static func contacts(_ contacts: [MessageContent.Contact]?) throws(OutboxError) -> [MessageContent.Contact] {
        guard let contacts, contactCount.contains(contacts.count) else {
            throw OutboxError(.validationError, "a contact message needs \(contactCount.lowerBound) to \(contactCount.upperBound) contacts")
        }
        for contact in contacts {
            guard !isBlank(contact.name) else {
                throw OutboxError(.validationError, "each contact needs a name")
            }
            if let vcard = contact.vcard {
                guard isVCard(vcard) else {
                    throw OutboxError(.validationError, "a vcard must run from a BEGIN:VCARD line to an END:VCARD line, with an FN or N line")
                }
            } else {
                guard let phone = contact.phone, isPhone(phone) else {
                    throw OutboxError(.validationError, "each contact needs a phone number (digits, optional +) or a vcard")
                }
            }
        }
        return contacts
    }

    /// `^\+?[0-9 ()-]{5,30}$`
    static func isPhone(_ phone: String) -> Bool {
        let body = phone.hasPrefix("+") ? phone.dropFirst() : Substring(phone)
        return (5...30).contains(body.unicodeScalars.count)
            && body.unicodeScalars.allSatisfy { ("0"..."9").contains($0) || " ()-".unicodeScalars.contains($0) }
    }

    static func isVCard(_ vcard: String) -> Bool {
        let lines = vcard.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" })
            .map { $0.hasSuffix("\r") ? $0.dropLast() : $0 }
        var trimmed = lines[...]
        while let last = trimmed.last, last.trimmingCharacters(in: .whitespaces).isEmpty { trimmed = trimmed.dropLast() }
        guard vcard.unicodeScalars.count <= maxText, trimmed.count >= 3, trimmed.first == "BEGIN:VCARD",
              trimmed.last?.trimmingCharacters(in: .whitespaces) == "END:VCARD" else { return false }
        return trimmed.dropFirst().contains { $0.hasPrefix("FN:") || $0.hasPrefix("FN;") || $0.hasPrefix("N:") || $0.hasPrefix("N;") }
    }
}
