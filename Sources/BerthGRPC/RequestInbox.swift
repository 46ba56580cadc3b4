import GRPCCore
import Synchronization

/// The inbound half of one RPC: its metadata, then its messages as the connection deframes them,
/// then the end (or the error that ended it).
///
/// One producer (the connection's thread) and one consumer (the RPC's handler). The consumer's
/// `next()` suspends while nothing is queued. Each message taken is reported through
/// `onConsumed`, so the connection can give the client flow-control credit back only as fast as
/// the handler reads.
final class RequestInbox: AsyncSequence, Sendable {
    typealias Element = RPCRequestPart<[UInt8]>
    typealias Failure = any Error

    private struct State {
        var parts: [Element] = []
        var head = 0
        /// Bytes of the queued messages.
        var queuedBytes = 0
        /// nil while open; then `.success` for a clean end, `.failure` for an error.
        var end: Result<Void, any Error>?
        var waiter: UnsafeContinuation<Element?, any Error>?
    }

    private let state = Mutex(State())
    private let onConsumed: @Sendable (Int) -> Void

    init(onConsumed: @escaping @Sendable (Int) -> Void) {
        self.onConsumed = onConsumed
    }

    /// Bytes of messages queued and not yet taken by the handler.
    var queuedBytes: Int { state.withLock { $0.queuedBytes } }

    func push(_ part: Element) {
        let waiter = state.withLock { state -> UnsafeContinuation<Element?, any Error>? in
            guard state.end == nil else { return nil }
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.parts.append(part)
            if case .message(let bytes) = part { state.queuedBytes += bytes.count }
            return nil
        }
        waiter?.resume(returning: part)
    }

    /// Ends the sequence after what is queued: cleanly with `error` nil. Only the first end counts.
    func finish(throwing error: (any Error)? = nil) {
        let waiter = state.withLock { state -> UnsafeContinuation<Element?, any Error>? in
            guard state.end == nil else { return nil }
            state.end = error.map { .failure($0) } ?? .success(())
            defer { state.waiter = nil }
            return state.waiter
        }
        guard let waiter else { return }
        if let error { waiter.resume(throwing: error) } else { waiter.resume(returning: nil) }
    }

    func next() async throws -> Element? {
        enum Step { case part(Element), end(Result<Void, any Error>), wait }
        let step = state.withLock { state -> Step in
            if state.head < state.parts.count { return .part(take(&state)) }
            if let end = state.end { return .end(end) }
            return .wait
        }
        switch step {
        case .part(let part):
            if case .message(let bytes) = part { onConsumed(bytes.count) }
            return part
        case .end(let end):
            try end.get()
            return nil
        case .wait:
            let part = try await withTaskCancellationHandler {
                try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Element?, any Error>) in
                    let immediate = state.withLock { state -> Result<Element?, any Error>? in
                        if state.head < state.parts.count { return .success(take(&state)) }
                        if let end = state.end { return end.map { nil } }
                        state.waiter = continuation
                        return nil
                    }
                    if let immediate { continuation.resume(with: immediate) }
                }
            } onCancel: {
                finish(throwing: CancellationError())
            }
            if case .message(let bytes) = part { onConsumed(bytes.count) }
            return part
        }
    }

    private func take(_ state: inout State) -> Element {
        let part = state.parts[state.head]
        state.head += 1
        if case .message(let bytes) = part { state.queuedBytes -= bytes.count }
        if state.head == state.parts.count {
            state.parts.removeAll(keepingCapacity: true)
            state.head = 0
        }
        return part
    }

    struct AsyncIterator: AsyncIteratorProtocol {
        let inbox: RequestInbox
        mutating func next() async throws -> Element? { try await inbox.next() }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(inbox: self) }
}
