import BerthCore
import BerthSystem
import Glibc
import Synchronization

/// The client's connection: the table of pending calls by stream ID, completed from
/// ``PollThread`` as replies arrive. Shared by ``TTRPCClient``, the poll thread and its timers.
final class ClientConnection: Sendable {
    typealias Completion = @Sendable (Result<[UInt8], TTRPCError>) -> Void

    private struct State {
        var nextStreamID: UInt32 = 1
        var pending: [UInt32: Completion] = [:]
        var closed = false
        var onClose: (@Sendable () -> Void)?
    }

    private let fd: Int32
    private let state: Mutex<State>
    /// Frames split across reads; used only on the poll thread.
    private let decoder = Mutex(TTRPCFrameDecoder())
    /// Held while a request is numbered and written, so stream IDs reach the server in order
    /// (ttrpc 1.2 refuses one lower than a previous one).
    private let writeLock = Mutex(())

    init(fd: Int32, onClose: (@Sendable () -> Void)?) {
        self.fd = fd
        self.state = Mutex(State(onClose: onClose))
    }

    deinit {
        Glibc.close(fd)
    }

    var isClosed: Bool { state.withLock { $0.closed } }

    /// Shuts the socket down; the poll thread then sees end of stream, fails pending calls and
    /// runs `onClose`.
    func close() {
        UnixSocket.shutdown(fd)
    }

    /// Numbers and sends a request; `completion` runs exactly once with its outcome, unless this
    /// throws (then it never runs).
    ///
    /// - Throws: ``TTRPCError/closed`` when the connection is closed (or has used up its stream
    ///   IDs); `resourceExhausted` when the request is over 4 MiB.
    func start(_ request: TTRPCRequest, completion: @escaping Completion) throws(TTRPCError) -> UInt32 {
        var frame = TTRPCFrame(streamID: 0, type: .request, data: request.encoded())
        try frame.checkSize()
        return try writeLock.withLock { _ throws(TTRPCError) -> UInt32 in
            let streamID = try state.withLock { state throws(TTRPCError) -> UInt32 in
                guard !state.closed, state.nextStreamID < UInt32.max - 1 else { throw TTRPCError.closed }
                let streamID = state.nextStreamID
                state.nextStreamID += 2
                state.pending[streamID] = completion
                return streamID
            }
            frame.streamID = streamID
            if !UnixSocket.writeAll(fd, frame.encoded()) {
                UnixSocket.shutdown(fd)  // the poll thread then fails every other pending call
                // Fail this one here, unless the poll thread has already taken it to fail it.
                if state.withLock({ $0.pending.removeValue(forKey: streamID) }) != nil {
                    throw TTRPCError.closed
                }
            }
            return streamID
        }
    }

    /// Completes a pending call with `error` (a deadline or cancellation). Returns false when the
    /// call was no longer pending, i.e. its outcome is already on its way.
    @discardableResult
    func fail(_ streamID: UInt32, with error: TTRPCError) -> Bool {
        guard let completion = state.withLock({ $0.pending.removeValue(forKey: streamID) }) else { return false }
        completion(.failure(error))
        return true
    }

    /// Reads what has arrived and completes the calls it answers; at end of stream (or on an
    /// error) fails every pending call and runs `onClose`. Runs on ``PollThread``, whenever the
    /// socket is readable.
    func readReady() -> PollThread.Next {
        let count = withUnsafeTemporaryAllocation(byteCount: Self.readSize, alignment: 1) { buffer -> Int in
            let count = UnixSocket.read(fd, into: buffer)
            guard count > 0 else { return count }
            let events = decoder.withLock { $0.push(buffer[..<count]) }
            for event in events {
                switch event {
                case .frame(let frame) where frame.type == .response:
                    complete(frame)
                case .frame:
                    break  // data frames (no client streams yet) and unknown types are ignored
                case .oversized(let streamID, _, let length):
                    fail(streamID, with: .messageTooLarge(length))
                }
            }
            return count
        }
        if count > 0 { return .keep }
        UnixSocket.shutdown(fd)
        let (pending, onClose) = state.withLock { state in
            state.closed = true
            defer {
                state.pending = [:]
                state.onClose = nil
            }
            return (state.pending.values, state.onClose)
        }
        for completion in pending {
            completion(.failure(.closed))
        }
        // The poll thread lets go of this connection after `onClose`; its descriptor is closed
        // when the last reference goes.
        return .stop { onClose?() }
    }

    private static let readSize = 16 << 10

    private func complete(_ frame: TTRPCFrame) {
        guard let completion = state.withLock({ $0.pending.removeValue(forKey: frame.streamID) }) else { return }
        do {
            let response = try TTRPCResponse(decoding: frame.data)
            if let status = response.status, status.code != .ok {
                completion(.failure(.status(status)))
            } else {
                completion(.success(response.payload))
            }
        } catch {
            completion(.failure(TTRPCError(.internal, "ttrpc: undecodable response: \(error.message)")))
        }
    }
}
