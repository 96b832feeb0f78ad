/// How long WhatsApp honours an edit or a revoke after the message was sent.
///
/// Past these windows WhatsApp's server still accepts the request but recipients silently ignore
/// it, so the gateway refuses such jobs before dispatch. The official apps allow 15 minutes for an
/// edit (whatsmeow's constant says 20) and about 48 hours for "delete for everyone".
public enum MessageWindows {
    public static let edit: Duration = .seconds(15 * 60)
    public static let revoke: Duration = .seconds(48 * 3600)
}
