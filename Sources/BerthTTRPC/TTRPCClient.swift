import BerthCore
import BerthSystem
import Glibc
import Synchronization

/// A ttrpc client on one unix-socket connection.
///
/// Calls may come from any number of threads or tasks at once. Each call takes the next odd
/// stream ID (1, 3, 5, …) and ``PollThread/shared``, which reads every client's socket, hands each
/// response to the call waiting for its stream ID, so replies may arrive in any order. When the
/// connection ends, for whatever reason, every pending call fails with ``TTRPCError/closed`` and
/// `onClose` runs once, on the poll thread (so it must not block).
///
/// Dropping the last reference closes the connection, as ``close()`` does.
public final class TTRPCClient: Sendable {
    private let connection: ClientConnection

    /// Connects to a containerd-style address: `unix:///path` is a socket file; anything without
    /// the `unix://` prefix is a name in the abstract namespace, as containerd dials shim addresses.
    ///
    /// - Parameter onClose: runs once when the connection ends, also after ``close()``.
    /// - Throws: `BerthError.unavailable` when nothing accepts at the address;
    ///   `BerthError.invalidArgument` for an address too long for `sockaddr_un`;
    ///   `BerthError.resourceExhausted` when the poll thread cannot start.
    public convenience init(address: String, onClose: (@Sendable () -> Void)? = nil) throws(BerthError) {
        let prefix = "unix://"
        let target: UnixSocket.Address = address.hasPrefix(prefix)
            ? .path(String(address.dropFirst(prefix.count)))
            : .abstract(address)
        try self.init(fileDescriptor: UnixSocket.connect(to: target), onClose: onClose)
    }

    /// Connects to the socket file at `path` (a plain path, no `unix://`).
    ///
    /// - Throws: as ``init(address:onClose:)``.
    public convenience init(path: String, onClose: (@Sendable () -> Void)? = nil) throws(BerthError) {
        try self.init(fileDescriptor: UnixSocket.connect(to: .path(path)), onClose: onClose)
    }

    /// Takes over an already connected stream socket (closed with the client).
    ///
    /// - Throws: `BerthError.resourceExhausted` when the poll thread cannot start (the
    ///   descriptor is closed then).
    public init(fileDescriptor: Int32, onClose: (@Sendable () -> Void)? = nil) throws(BerthError) {
        connection = ClientConnection(fd: fileDescriptor, onClose: onClose)
        try PollThread.shared.watch(fileDescriptor) { [connection] _ in connection.readReady() }
    }

    deinit {
        connection.close()
    }

    /// Closes the connection. Pending calls fail with ``TTRPCError/closed`` and `onClose` runs,
    /// both on the poll thread, shortly after this returns.
    public func close() {
        connection.close()
    }

    /// True once the connection has ended (calls then fail at once with ``TTRPCError/closed``).
    public var isClosed: Bool { connection.isClosed }

    /// Calls `service`/`method` and blocks the calling thread until the reply arrives.
    ///
    /// - Parameters:
    ///   - service: the fully qualified service, e.g. `containerd.task.v2.Task`.
    ///   - method: the bare method name, e.g. `State`.
    ///   - payload: the marshalled request message.
    ///   - metadata: sent as ttrpc metadata, keys lower-cased, one entry per value; put the
    ///     namespace under ``TTRPCMetadataKey/namespace``.
    ///   - timeout: sent as `timeout_nano`; the call also gives up by itself when it passes.
    /// - Returns: the marshalled reply message (empty for `google.protobuf.Empty`).
    /// - Throws: ``TTRPCError/status(_:)`` with the server's status; `deadlineExceeded` when the
    ///   timeout passes first; `resourceExhausted` when the request is over 4 MiB;
    ///   ``TTRPCError/closed`` when the connection is or becomes closed before the reply.
    public func call(
        service: String, method: String, payload: [UInt8] = [],
        metadata: [String: [String]] = [:], timeout: Duration? = nil
    ) throws(TTRPCError) -> [UInt8] {
        let request = makeRequest(service: service, method: method, payload: payload, metadata: metadata, timeout: timeout)
        let deadline = timeout.map { MonotonicInstant.now + $0 }
        let reply = ConditionLock<Result<[UInt8], TTRPCError>?>(nil)
        let streamID = try connection.start(request) { result in reply.update { $0 = result } }
        if let result = reply.wait(until: deadline, { $0 }) {
            return try result.get()
        }
        // The deadline passed. fail() delivers the deadline error unless the reply got there
        // first and is being delivered; either way the outcome is immediate.
        connection.fail(streamID, with: deadlineError(service, method, timeout))
        return try reply.wait { $0 }!.get()
    }

    /// Calls `service`/`method` without blocking a thread of the cooperative pool; otherwise as
    /// the blocking ``call(service:method:payload:metadata:timeout:)``.
    ///
    /// - Throws: as the blocking call, and ``TTRPCError/status(_:)`` with code `canceled` when
    ///   the task is cancelled first (a late reply is dropped).
    public func call(
        service: String, method: String, payload: [UInt8] = [],
        metadata: [String: [String]] = [:], timeout: Duration? = nil
    ) async throws(TTRPCError) -> [UInt8] {
        let request = makeRequest(service: service, method: method, payload: payload, metadata: metadata, timeout: timeout)
        let pending = PendingAsyncCall()
        defer { pending.finish() }
        let result: Result<[UInt8], TTRPCError> = await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let streamID: UInt32
                do throws(TTRPCError) {
                    streamID = try connection.start(request) { continuation.resume(returning: $0) }
                } catch {
                    continuation.resume(returning: .failure(error))
                    return
                }
                var timer: Task<Void, Never>?
                if let timeout {
                    let error = deadlineError(service, method, timeout)
                    timer = Task.detached { [connection] in
                        guard (try? await Task.sleep(for: timeout)) != nil else { return }
                        connection.fail(streamID, with: error)
                    }
                }
                // Registered after the task may already be cancelled: then cancel here.
                if pending.started(streamID, timer: timer) {
                    connection.fail(streamID, with: TTRPCError(.canceled, "\(service)/\(method): canceled"))
                }
            }
        } onCancel: {
            if let streamID = pending.cancel() {
                connection.fail(streamID, with: TTRPCError(.canceled, "\(service)/\(method): canceled"))
            }
        }
        return try result.get()
    }

    private func makeRequest(service: String, method: String, payload: [UInt8], metadata: [String: [String]], timeout: Duration?) -> TTRPCRequest {
        var entries: [TTRPCKeyValue] = []
        for key in metadata.keys.sorted() {
            for value in metadata[key]! {
                entries.append(TTRPCKeyValue(key: key.lowercased(), value: value))
            }
        }
        let nanoseconds = timeout.map { max($0.wholeNanoseconds, 1) } ?? 0
        return TTRPCRequest(service: service, method: method, payload: payload, timeoutNanoseconds: nanoseconds, metadata: entries)
    }

    private func deadlineError(_ service: String, _ method: String, _ timeout: Duration?) -> TTRPCError {
        TTRPCError(.deadlineExceeded, "\(service)/\(method): no reply within \(timeout ?? .zero): context deadline exceeded")
    }
}

/// Links an async call's continuation, its timer and task cancellation, which may happen in any order.
private final class PendingAsyncCall: Sendable {
    private struct State {
        var streamID: UInt32?
        var timer: Task<Void, Never>?
        var cancelled = false
    }

    private let state = Mutex(State())

    /// Records the started call; true when the task was cancelled before it started.
    func started(_ streamID: UInt32, timer: Task<Void, Never>?) -> Bool {
        state.withLock { state in
            state.streamID = streamID
            state.timer = timer
            return state.cancelled
        }
    }

    /// Marks the call cancelled; returns its stream ID if it has started.
    func cancel() -> UInt32? {
        state.withLock { state in
            state.cancelled = true
            return state.streamID
        }
    }

    /// Stops the timer once the call is over.
    func finish() {
        state.withLock { $0.timer }?.cancel()
    }
}
