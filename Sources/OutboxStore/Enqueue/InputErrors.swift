import OutboxCore
import PostgresClient

extension OutboxError {
    /// The caller's input as PostgreSQL refused it, as the error the caller can act on; nil for an
    /// error that is not about the input (the database is down, a bug).
    ///
    /// `wa_outbox.enqueue` raises its own codes (WA400, WA404, …). Some input never reaches it:
    /// PostgreSQL refuses it while reading the parameters, so the function's checks cannot run.
    /// Those are the caller's fault as much as a missing field, and answer `validation_error` too.
    public static func refusedInput(_ error: PostgresError) -> OutboxError? {
        if let code = ErrorCode.fromSQLState(error.sqlState) { return OutboxError(code, error.message) }
        switch error.sqlState {
        case "22P02": return OutboxError(.validationError, "payload is not valid JSON: \(error.message)")
        // untranslatable_character: jsonb refuses "\u0000", which PostgreSQL text cannot hold.
        case "22P05": return OutboxError(.validationError, "the payload contains a NUL character (\\u0000), which cannot be stored")
        // character_not_in_repertoire: a NUL byte or invalid UTF-8 in a text parameter.
        case "22021": return OutboxError(.validationError, "the input contains a NUL byte or is not valid UTF-8")
        // statement_too_complex / stack depth: JSON nested deeper than the parser goes.
        case "54001": return OutboxError(.validationError, "the payload nests too deeply")
        // Any other data exception (a number or time out of range, a string too long) is the input's.
        case let state? where state.hasPrefix("22"): return OutboxError(.validationError, "the input was refused: \(error.message)")
        default: return nil
        }
    }
}
