import Logging
import OutboxCore

/// One log line per outcome, with job, session and organization ids; never a message body.
public enum OutcomeLog {
    public static func log(_ outcome: Outcome, of job: ClaimedJob, logger: Logger) {
        var logger = logger
        logger[metadataKey: "job.id"] = "\(job.id)"
        logger[metadataKey: "session.id"] = "\(job.sessionID)"
        logger[metadataKey: "org.id"] = "\(job.org)"
        switch outcome {
        case .succeeded:
            logger.info("job sent", metadata: ["job.kind": "\(job.kind.rawValue)", "attempt": "\(job.attempt)"])
        case .failed(let code, let message):
            logger.warning("job failed", metadata: ["job.kind": "\(job.kind.rawValue)", "error.code": "\(code.rawValue)", "error": "\(message)", "attempt": "\(job.attempt)"])
        case .retry(let delay, let code, _):
            logger.info("job will retry", metadata: ["error.code": "\(code.rawValue)", "attempt": "\(job.attempt)", "retry_in": "\(delay)"])
        case .defer_(_, .accountRestricted, let message):
            logger.error("WhatsApp restricted this session's account (463): its jobs are paused until an operator sets it active",
                         metadata: ["error": "\(message)"])
        case .defer_(let delay, let code, _):
            logger.debug("job deferred", metadata: ["reason": "\(code.rawValue)", "retry_in": "\(delay)"])
        }
    }
}
