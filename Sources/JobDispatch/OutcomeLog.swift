import Logging
import OutboxCore

/// One log line per outcome, with job, session and organization ids; never a message body.
/// Nothing is formatted unless the line is written (the metadata are autoclosures): at a level
/// above info, a draining worker spent 8% of its CPU here setting the ids on a copy of its logger.
public enum OutcomeLog {
    public static func log(_ outcome: Outcome, of job: ClaimedJob, logger: Logger) {
        func ids(_ more: Logger.Metadata) -> Logger.Metadata {
            more.merging(["job.id": "\(job.id)", "session.id": "\(job.sessionID)", "org.id": "\(job.org)"]) { $1 }
        }
        switch outcome {
        case .succeeded:
            logger.info("job sent", metadata: ids(["job.kind": "\(job.kind.rawValue)", "attempt": "\(job.attempt)"]))
        case .failed(let code, let message):
            logger.warning("job failed", metadata: ids(["job.kind": "\(job.kind.rawValue)", "error.code": "\(code.rawValue)", "error": "\(message)", "attempt": "\(job.attempt)"]))
        case .retry(let delay, let code, _):
            logger.info("job will retry", metadata: ids(["error.code": "\(code.rawValue)", "attempt": "\(job.attempt)", "retry_in": "\(delay)"]))
        case .defer_(_, .accountRestricted, let message):
            logger.error("WhatsApp restricted this session's account (463): its jobs are paused until an operator sets it active",
                         metadata: ids(["error": "\(message)"]))
        case .defer_(let delay, let code, _):
            logger.debug("job deferred", metadata: ids(["reason": "\(code.rawValue)", "retry_in": "\(delay)"]))
        }
    }
}
