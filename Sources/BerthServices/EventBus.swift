import BerthAPI
import BerthCore
import Logging
import SwiftProtobuf
import Synchronization

/// Fans events out to `Events/Subscribe` streams.
///
/// Publishing never blocks: each subscriber has a bounded buffer, and a subscriber that falls
/// more than that far behind loses its oldest events rather than slowing the daemon.
public final class EventBus: Sendable {
    private struct Subscriber {
        let filter: Filter
        let continuation: AsyncStream<APIEnvelope>.Continuation
    }

    private struct State {
        var subscribers: [Int: Subscriber] = [:]
        /// Set by ``finishAll()``: later subscriptions end at once.
        var closed = false
    }

    private let state = Mutex(State())
    private let nextID = Atomic<Int>(0)
    private let logger: Logger

    public init(logger: Logger) { self.logger = logger }

    /// Publishes `event` on `topic` in `namespace`.
    public func publish(namespace: String, topic: String, event: some SwiftProtobuf.Message) {
        do {
            var envelope = APIEnvelope()
            envelope.timestamp = .init(Timestamp.now)
            envelope.namespace = namespace
            envelope.topic = topic
            envelope.event = try Google_Protobuf_Any(event: event)
            forward(envelope)
        } catch {
            logger.error("cannot encode event", metadata: ["topic": "\(topic)", "error": "\(error)"])
        }
    }

    /// Delivers a complete envelope (from `Publish`, `Forward` or a shim).
    public func forward(_ envelope: APIEnvelope) {
        let view = EnvelopeView(envelope: envelope)
        state.withLock { state in
            for subscriber in state.subscribers.values where subscriber.filter.matches(view) {
                subscriber.continuation.yield(envelope)
            }
        }
    }

    /// A stream of the events `filter` matches, from now on, until the consumer stops.
    public func subscribe(filter: Filter) -> AsyncStream<APIEnvelope> {
        let id = nextID.add(1, ordering: .relaxed).newValue
        let (stream, continuation) = AsyncStream<APIEnvelope>.makeStream(bufferingPolicy: .bufferingNewest(4096))
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.subscribers.removeValue(forKey: id) }
        }
        let open = state.withLock { state -> Bool in
            guard !state.closed else { return false }
            state.subscribers[id] = Subscriber(filter: filter, continuation: continuation)
            return true
        }
        if !open { continuation.finish() }
        return stream
    }

    /// Ends every subscription, for shutdown.
    public func finishAll() {
        let all = state.withLock { state in
            defer { state.subscribers.removeAll() }
            state.closed = true
            return Array(state.subscribers.values)
        }
        for subscriber in all { subscriber.continuation.finish() }
    }
}

/// The fields an events filter can name: `namespace`, `topic`, `event.*` is not supported.
struct EnvelopeView: Filterable {
    let envelope: APIEnvelope
    func field(_ path: [String]) -> String? {
        switch path {
        case ["namespace"]: envelope.namespace
        case ["topic"]: envelope.topic
        default: nil
        }
    }
}

/// Event topics, as containerd names them.
enum Topic {
    static let namespaceCreate = "/namespaces/create"
    static let namespaceUpdate = "/namespaces/update"
    static let namespaceDelete = "/namespaces/delete"
    static let imageCreate = "/images/create"
    static let imageUpdate = "/images/update"
    static let imageDelete = "/images/delete"
    static let contentDelete = "/content/delete"
    static let containerCreate = "/containers/create"
    static let containerUpdate = "/containers/update"
    static let containerDelete = "/containers/delete"
    static let snapshotPrepare = "/snapshot/prepare"
    static let snapshotCommit = "/snapshot/commit"
    static let snapshotRemove = "/snapshot/remove"
}
