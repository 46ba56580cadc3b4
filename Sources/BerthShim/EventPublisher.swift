import BerthCore
import BerthSystem
import BerthTTRPC
import Glibc

/// Sends task events to the daemon's ttrpc `containerd.services.events.ttrpc.v1.Events/Forward`
/// at `$TTRPC_ADDRESS`, in the order they were queued, from one thread.
///
/// The connection is made lazily and remade after a failure. An event that cannot be sent is
/// retried after 1, 2, 3… seconds and dropped after five attempts, as containerd's publisher does.
/// Unlike containerd's, it closes the connection once nothing has been queued for ``idleTimeout``:
/// a running container publishes nothing between its start and its exit, and an open connection
/// costs the daemon a descriptor and the thread that serves it, for every container.
public final class EventPublisher: Sendable {
    public static let service = "containerd.services.events.ttrpc.v1.Events"
    static let idleTimeout: Duration = .milliseconds(500)

    private struct State {
        var queue: [EventEnvelope] = []
        var sending = false
        /// The topic of the event being sent.
        var current = ""
        var closed = false
    }

    private let address: String?
    private let namespace: String
    private let state = ConditionLock(State())
    private let client = ConditionLock<TTRPCClient?>(nil)

    /// - Parameter address: the daemon's ttrpc socket path; nil drops every event.
    public init(address: String?, namespace: String) {
        self.address = address.flatMap { $0.isEmpty ? nil : $0 }
        self.namespace = namespace
    }

    public func start() throws(BerthError) {
        try startThread(name: "events") { [self] in run() }
    }

    /// Queues an event (stamped now).
    public func publish(_ event: TaskEvent) {
        let envelope = EventEnvelope(timestamp: .now(), namespace: namespace, event: event)
        state.update { state in
            guard !state.closed, address != nil, state.queue.count < 2048 else { return }
            state.queue.append(envelope)
        }
    }

    /// Waits until the queue is empty (or `timeout` passes) and stops sending.
    ///
    /// - Returns: the topics of the events that were not sent, the one being sent first.
    @discardableResult
    public func flush(timeout: Duration) -> [String] {
        _ = state.wait(until: .now + timeout) { ($0.queue.isEmpty && !$0.sending) ? true : nil }
        return state.update { state in
            state.closed = true
            return (state.sending ? [state.current] : []) + state.queue.map(\.topic)
        }
    }

    private func run() {
        while true {
            let connected = client.update { $0 != nil }
            let next = state.wait(until: connected ? .now + Self.idleTimeout : nil) { state -> EventEnvelope? in
                guard let first = state.queue.first else { return nil }
                state.queue.removeFirst()
                state.sending = true
                state.current = first.topic
                return first
            }
            guard let next else {
                client.update { $0?.close(); $0 = nil }
                continue
            }
            send(next)
            state.update { $0.sending = false }
        }
    }

    private func send(_ envelope: EventEnvelope) {
        let payload = ForwardRequest(envelope: envelope).encoded()
        for attempt in 1...5 {
            do {
                let connection = try connect()
                _ = try connection.call(
                    service: Self.service, method: "Forward", payload: payload,
                    metadata: [TTRPCMetadataKey.namespace: [namespace]], timeout: .seconds(5))
                return
            } catch {
                client.update { $0?.close(); $0 = nil }
                if state.update({ $0.closed }) { return }
                sleep(for: .seconds(attempt))
            }
        }
        log("berth-shim: dropped event \(envelope.topic) after 5 attempts")
    }

    private func connect() throws -> TTRPCClient {
        if let existing = client.update({ $0 }), !existing.isClosed { return existing }
        let made = try TTRPCClient(path: address!)
        client.update { $0 = made }
        return made
    }
}

/// Writes a line to stderr (the daemon's shim log FIFO, when it made one).
func log(_ message: String) {
    let line = Array((message + "\n").utf8)
    _ = line.withUnsafeBytes { writeAll(2, $0) }
}
