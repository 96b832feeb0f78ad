import Synchronization
import Tracing
import W3CTraceContext

/// A test tracer that speaks W3C trace context (InMemoryTracer propagates its own keys, not
/// `traceparent`): it extracts and injects `traceparent`, and records every span it starts with
/// its trace id, its id and its parent's id. Bound to a test with `withTracer(_:_:)`, so only that
/// test's tasks (its server, its worker) use it.
final class RecordingTracer: Tracer {
    typealias Span = RecordingSpan

    private let started = Mutex<[RecordingSpan]>([])

    var spans: [RecordingSpan] { started.withLock { $0 } }

    func spans(named name: String) -> [RecordingSpan] { spans.filter { $0.operationName == name } }

    func startSpan<Instant: TracerInstant>(_ operationName: String, context: @autoclosure () -> InstrumentationContext, ofKind kind: SpanKind,
                                           at instant: @autoclosure () -> Instant, function: String, file fileID: String, line: UInt) -> RecordingSpan {
        var context = context()
        let parent = context.recordedIDs
        let ids = RecordedIDs(traceID: parent?.traceID ?? TraceID.random().description, spanID: SpanID.random().description)
        context.recordedIDs = ids
        let span = RecordingSpan(operationName: operationName, context: context, ids: ids, parentSpanID: parent?.spanID)
        started.withLock { $0.append(span) }
        return span
    }

    func forceFlush() {}

    func extract<Carrier, Extract>(_ carrier: Carrier, into context: inout InstrumentationContext, using extractor: Extract)
    where Extract: Extractor, Extract.Carrier == Carrier {
        guard let header = extractor.extract(key: "traceparent", from: carrier),
              let parsed = try? TraceContext(traceParentHeaderValue: header) else { return }
        context.recordedIDs = RecordedIDs(traceID: parsed.traceID.description, spanID: parsed.spanID.description)
    }

    func inject<Carrier, Inject>(_ context: InstrumentationContext, into carrier: inout Carrier, using injector: Inject)
    where Inject: Injector, Inject.Carrier == Carrier {
        guard let ids = context.recordedIDs else { return }
        injector.inject("00-\(ids.traceID)-\(ids.spanID)-01", forKey: "traceparent", into: &carrier)
    }
}

struct RecordedIDs: Sendable, Equatable {
    var traceID: String
    var spanID: String
}

private enum RecordedIDsKey: InstrumentationContextKey {
    typealias Value = RecordedIDs
}

extension InstrumentationContext {
    fileprivate var recordedIDs: RecordedIDs? {
        get { self[RecordedIDsKey.self] }
        set { self[RecordedIDsKey.self] = newValue }
    }
}

final class RecordingSpan: Span {
    let context: InstrumentationContext
    let traceID: String
    let spanID: String
    let parentSpanID: String?
    private let state: Mutex<(name: String, attributes: SpanAttributes, status: SpanStatus?, ended: Bool)>

    init(operationName: String, context: InstrumentationContext, ids: RecordedIDs, parentSpanID: String?) {
        self.context = context
        self.traceID = ids.traceID
        self.spanID = ids.spanID
        self.parentSpanID = parentSpanID
        self.state = Mutex((operationName, [:], nil, false))
    }

    var operationName: String {
        get { state.withLock { $0.name } }
        set { state.withLock { $0.name = newValue } }
    }

    var attributes: SpanAttributes {
        get { state.withLock { $0.attributes } }
        set { state.withLock { $0.attributes = newValue } }
    }

    var status: SpanStatus? { state.withLock { $0.status } }
    var isRecording: Bool { state.withLock { !$0.ended } }

    func setStatus(_ status: SpanStatus) { state.withLock { $0.status = status } }
    func addEvent(_ event: SpanEvent) {}
    func recordError<Instant: TracerInstant>(_ error: any Error, attributes: SpanAttributes, at instant: @autoclosure () -> Instant) {}
    func addLink(_ link: SpanLink) {}
    func end<Instant: TracerInstant>(at instant: @autoclosure () -> Instant) { state.withLock { $0.ended = true } }
}
