import BerthCore
import BerthSystem
import Glibc
import Synchronization

/// Answers one unary call: gets the request's context and payload, returns the reply payload.
/// Throwing a ``TTRPCError`` sends its status; a `BerthError` is sent with the matching code;
/// anything else as `unknown`.
public typealias TTRPCUnaryHandler = @Sendable (_ context: TTRPCContext, _ payload: [UInt8]) throws -> [UInt8]

/// Serves one streaming call (ttrpc 1.2): gets the request's context, its payload (the first
/// message) and the stream to send further messages on. Returning ends the stream with
/// `Data[remoteClosed|noData]`; throwing ends it with a Response carrying the error's status.
public typealias TTRPCStreamHandler = @Sendable (_ context: TTRPCContext, _ payload: [UInt8], _ stream: TTRPCServerStream) throws -> Void

/// A ttrpc server on unix sockets.
///
/// Threads, not Swift concurrency: one accept thread per listener, one reader thread per
/// connection, and one thread per request (unless its handler is registered to run on the
/// connection's thread), so a handler that blocks (a shim's Wait) holds up nothing else, and
/// replies go out in whatever order handlers finish. Writes on a connection
/// are serialized by a lock, one whole frame at a time.
///
/// The server keeps running while its threads do, whether or not anyone holds it; call
/// ``close()`` or ``shutdown(gracePeriod:)`` to stop it.
public final class TTRPCServer: Sendable {
    enum Handler {
        /// `onConnectionThread`: run by the connection's reader thread, not a thread of its own.
        case unary(TTRPCUnaryHandler, onConnectionThread: Bool)
        case stream(TTRPCStreamHandler)
    }

    enum Lookup {
        case found(Handler)
        case unknownService
        case unknownMethod
    }

    private struct State {
        var listeners: [Listener] = []
        var connections: [ObjectIdentifier: ServerConnection] = [:]
        var inFlight = 0
        var stopping = false
        var closed = false
    }

    /// Whether connections from another uid or gid are refused (see ``init(requireSameUser:)``).
    public let requireSameUser: Bool
    private let handlers = Mutex<[String: [String: Handler]]>([:])
    private let state = ConditionLock(State())

    /// Creates a server with no handlers and no listeners.
    ///
    /// - Parameter requireSameUser: close each connection whose peer (by `SO_PEERCRED`) runs with
    ///   a uid or gid other than this process's effective ones, as containerd's ttrpc servers do.
    public init(requireSameUser: Bool = true) {
        self.requireSameUser = requireSameUser
    }

    // MARK: - Handlers

    /// Registers (or replaces) the handler for `service`/`method`. Safe at any time, also while serving.
    ///
    /// - Parameter onConnectionThread: run the handler on the connection's reader thread instead
    ///   of a thread of its own, for a handler that never blocks and takes microseconds (berthd's
    ///   event `Forward`, four per container run): starting a thread costs more than such a call.
    ///   The connection reads its next request only after the reply.
    public func register(service: String, method: String, onConnectionThread: Bool = false,
                         _ handler: @escaping TTRPCUnaryHandler) {
        handlers.withLock { $0[service, default: [:]][method] = .unary(handler, onConnectionThread: onConnectionThread) }
    }

    /// Registers (or replaces) a streaming handler for `service`/`method`.
    public func registerStreaming(service: String, method: String, _ handler: @escaping TTRPCStreamHandler) {
        handlers.withLock { $0[service, default: [:]][method] = .stream(handler) }
    }

    func lookup(service: String, method: String) -> Lookup {
        handlers.withLock { handlers in
            guard let methods = handlers[service] else { return .unknownService }
            guard let handler = methods[method] else { return .unknownMethod }
            return .found(handler)
        }
    }

    // MARK: - Listening

    /// Listens on a socket file at `path` and starts accepting on a new thread.
    ///
    /// Creates missing parent directories (0711), replaces a stale socket nobody answers on, and
    /// makes the socket 0600. ``shutdown(gracePeriod:)`` and ``close()`` remove the file.
    ///
    /// - Throws: `BerthError.alreadyExists` when a live server answers at `path` or the path is
    ///   not a socket; `BerthError.invalidArgument` for a path longer than `sockaddr_un` allows;
    ///   `BerthError.failedPrecondition` after the server was stopped; `BerthError.internal` or
    ///   `.resourceExhausted` when a system call fails.
    public func listen(path: String) throws(BerthError) {
        let fd = try UnixSocket.listen(path: path)
        do {
            try serve(listener: fd, removing: path)
        } catch {
            unlink(path)
            throw error
        }
    }

    /// Accepts on an already listening socket, such as the fd 3 a shim inherits, on a new thread.
    /// The server owns `listenerFD` from now on and closes it when stopped.
    ///
    /// - Throws: `BerthError.failedPrecondition` after the server was stopped (the descriptor is
    ///   closed); `BerthError.internal` or `.resourceExhausted` when a system call fails.
    public func serve(listenerFD: Int32) throws(BerthError) {
        try serve(listener: listenerFD, removing: nil)
    }

    private func serve(listener fd: Int32, removing path: String?) throws(BerthError) {
        let listener: Listener
        do {
            listener = try Listener(fd: fd, path: path)
        } catch {
            Glibc.close(fd)
            throw error
        }
        let accepted = state.update { state in
            guard !state.stopping else { return false }
            state.listeners.append(listener)
            return true
        }
        guard accepted else {
            Glibc.close(fd)
            throw .failedPrecondition("ttrpc server: stopped; cannot serve on another socket")
        }
        do {
            try spawnThread(name: "ttrpc-accept") { [self] in acceptLoop(listener) }
        } catch {
            state.update { $0.listeners.removeAll { $0 === listener } }
            Glibc.close(fd)
            throw error
        }
    }

    private func acceptLoop(_ listener: Listener) {
        defer { Glibc.close(listener.fd) }
        var fds = [
            pollfd(fd: listener.wakeRead, events: Int16(POLLIN), revents: 0),
            pollfd(fd: listener.fd, events: Int16(POLLIN), revents: 0),
        ]
        while true {
            fds[0].revents = 0
            fds[1].revents = 0
            if poll(&fds, 2, -1) < 0 {
                if errno == EINTR { continue }
                return
            }
            if fds[0].revents != 0 { return }  // woken by shutdown or close
            if fds[1].revents & Int16(POLLNVAL) != 0 { return }
            let fd = GNU.accept4(listener.fd, flags: Int32(SOCK_CLOEXEC.rawValue))
            if fd < 0 {
                switch errno {
                case EINTR, EAGAIN, ECONNABORTED, EPROTO:
                    continue
                case EMFILE, ENFILE, ENOBUFS, ENOMEM:
                    usleep(100_000)  // out of descriptors or memory: back off rather than spin
                    continue
                default:
                    return
                }
            }
            adopt(fd)
        }
    }

    private func adopt(_ fd: Int32) {
        if requireSameUser {
            guard let peer = UnixSocket.peerCredentials(fd), peer.uid == geteuid(), peer.gid == getegid() else {
                Glibc.close(fd)
                return
            }
        }
        let connection = ServerConnection(fd: fd, server: self)
        let registered = state.update { state in
            guard !state.stopping else { return false }
            state.connections[ObjectIdentifier(connection)] = connection
            return true
        }
        guard registered else { return }  // deinit closes fd
        do {
            try spawnThread(name: "ttrpc-conn") { connection.readLoop() }
        } catch {
            connectionEnded(connection)
        }
    }

    // MARK: - Bookkeeping for connections

    func connectionEnded(_ connection: ServerConnection) {
        state.update { _ = $0.connections.removeValue(forKey: ObjectIdentifier(connection)) }
    }

    /// Counts a request as in flight; false once the server is closed.
    func beginRequest() -> Bool {
        state.update { state in
            guard !state.closed else { return false }
            state.inFlight += 1
            return true
        }
    }

    func endRequest() {
        state.update { $0.inFlight -= 1 }
    }

    // MARK: - Stopping

    /// Stops gracefully: stops accepting and closes the listeners (removing socket files this
    /// server created), waits until no request is in flight or `gracePeriod` has passed, then
    /// closes every connection. Blocks for that long.
    ///
    /// Connections already open keep being served during the wait. A handler that calls this
    /// counts as in flight itself, so it must pass a grace period (or run it on another thread).
    ///
    /// - Returns: how many requests were still in flight when the connections were closed.
    @discardableResult
    public func shutdown(gracePeriod: Duration? = nil) -> Int {
        stopAccepting()
        let deadline = gracePeriod.map { MonotonicInstant.now + $0 }
        state.wait(until: deadline, for: { $0.inFlight == 0 })
        let left = state.update { $0.inFlight }
        closeConnections()
        return left
    }

    /// Stops at once: stops accepting, closes the listeners (removing socket files this server
    /// created) and every connection. Replies of handlers still running are dropped.
    public func close() {
        stopAccepting()
        closeConnections()
    }

    /// Blocks the calling thread until ``shutdown(gracePeriod:)`` or ``close()`` has finished.
    public func waitUntilClosed() {
        state.wait(for: { $0.closed })
    }

    private func stopAccepting() {
        let listeners = state.update { state in
            state.stopping = true
            defer { state.listeners = [] }
            return state.listeners
        }
        for listener in listeners {
            listener.wake()
        }
    }

    private func closeConnections() {
        let connections = state.update { state in
            state.closed = true
            return Array(state.connections.values)
        }
        for connection in connections {
            connection.close()
        }
    }
}

/// A listening socket plus the pipe that wakes its accept loop.
private final class Listener: Sendable {
    let fd: Int32
    let wakeRead: Int32
    let wakeWrite: Int32
    let path: String?

    init(fd: Int32, path: String?) throws(BerthError) {
        var pipe: [Int32] = [-1, -1]
        guard GNU.pipe2(&pipe, flags: O_CLOEXEC | O_NONBLOCK) == 0 else {
            throw .internal("ttrpc server: create wake pipe: \(errnoText(errno))")
        }
        self.fd = fd
        self.wakeRead = pipe[0]
        self.wakeWrite = pipe[1]
        self.path = path
    }

    deinit {
        Glibc.close(wakeRead)
        Glibc.close(wakeWrite)
    }

    /// Makes the accept loop return (it then closes `fd`) and removes the socket file.
    func wake() {
        if let path { unlink(path) }
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
    }
}
