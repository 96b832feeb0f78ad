/// WhatsApp message ids as engines write them.
public enum MessageKey {
    /// The key id inside an engine's message id. WAHA serializes a message as
    /// `true_CHAT_KEYID` (`false_…` when received, with `_PARTICIPANT` in groups); wuzapi and the
    /// simulator use the bare key id. Receipts name the key id, so jobs are found by it.
    public static func keyID(of engineID: String) -> String {
        let parts = engineID.split(separator: "_", omittingEmptySubsequences: false)
        if parts.count >= 3, parts[0] == "true" || parts[0] == "false" { return String(parts[2]) }
        return engineID
    }
}
