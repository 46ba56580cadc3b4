import BerthCore
import BerthSystem
import BerthTTRPC
import CBerthSystem
import Glibc
import GRPCCore
import Synchronization

/// berthd's gRPC server transport: HTTP/2 over a unix socket, for GRPCCore's `GRPCServer`.
///
/// ## Why not grpc-swift-nio-transport
/// A `ctr run --rm` makes about 40 unary calls. Through swift-nio, nio-http2 and the NIO
/// transport, berthd spent about 1 ms of CPU on each, two thirds of it in those layers (child
/// channels per stream, async-sequence bridges, HPACK and state machines built for the general
/// case). This transport does what a gRPC server on a local socket needs and nothing else, with
/// a thread per connection that is also the executor of that connection's handlers (see
/// ``HTTP2Connection``).
///
/// ## The socket
/// `init` checks the path and takes `<socket>.lock` (an exclusive `flock` held until the process
/// exits), so a second berthd fails at once with "another berthd is serving <path>". `listen`
/// creates missing parent directories (0711), replaces a stale socket, binds, and gives the socket
/// `socketMode` and, when set, `socketGroup`.
///
/// ## Shutdown
/// `beginGracefulShutdown` stops accepting and sends every connection GOAWAY; `listen` returns
/// once the last call has finished. Cancelling `listen` closes every connection at once.
public final class GRPCUnixTransport: ServerTransport, Sendable {
    public typealias Bytes = [UInt8]

    /// `sun_path` holds 108 bytes on Linux, including the terminating NUL.
    public static let maxPathBytes = 107

    public let path: String
    let socketGroup: gid_t?
    let socketMode: mode_t
    let limits: HTTP2Connection.Limits
    let directMethods: [String: DirectMethod]

    private struct Registry {
        var listener: Int32?
        var accepting = false
        var stopping = false
        var connections: [ObjectIdentifier: HTTP2Connection] = [:]
        var finished: CheckedContinuation<Void, Never>?
        var listening: [CheckedContinuation<Void, any Error>] = []
        var listenResult: Result<Void, any Error>?
    }

    private let registry = Mutex(Registry())

    /// - Parameters:
    ///   - maxMessageSize: The largest request message; larger ones fail with RESOURCE_EXHAUSTED
    ///     (16 MiB, containerd's default).
    ///   - streamWindow: Each stream's HTTP/2 receive window.
    ///   - directMethods: Methods this transport serves itself (see ``DirectMethod``); the
    ///     server's services still register them, for calls that take the general path.
    /// - Throws: `invalidArgument` for a bad path; `unavailable` ("another berthd is serving
    ///   <path>") if another process holds `<path>.lock`; the errno-mapped error if a directory or
    ///   the lock file cannot be made.
    public init(
        path: String, socketGroup: gid_t? = nil, socketMode: mode_t = 0o660,
        maxMessageSize: Int = 16 << 20, streamWindow: Int = 4 << 20, directMethods: [DirectMethod] = []
    ) throws(BerthError) {
        try Self.validate(path: path)
        self.path = path
        self.socketGroup = socketGroup
        self.socketMode = socketMode
        var limits = HTTP2Connection.Limits()
        limits.maxMessageSize = maxMessageSize
        limits.streamWindow = streamWindow
        self.limits = limits
        self.directMethods = Dictionary(directMethods.map { ($0.path, $0) }, uniquingKeysWith: { _, last in last })
        try FileSystem.makeDirectories(FileSystem.parentDirectory(of: path), mode: 0o711)
        try SocketLocks.acquire(for: path)
    }

    /// Checks that `path` can be bound as a unix socket.
    public static func validate(path: String) throws(BerthError) {
        guard !path.isEmpty else { throw .invalidArgument("socket path: empty") }
        guard !path.utf8.contains(0) else { throw .invalidArgument("socket path \"\(path)\": contains a NUL byte") }
        let length = path.utf8.count
        guard length <= maxPathBytes else {
            throw .invalidArgument(
                "socket path \"\(path)\": \(length) bytes, longer than the \(maxPathBytes) a unix socket address holds")
        }
    }

    /// Returns once `listen` has bound the socket, or throws what binding threw.
    public func waitUntilListening() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let ready = registry.withLock { registry -> Result<Void, any Error>? in
                if let result = registry.listenResult { return result }
                registry.listening.append(continuation)
                return nil
            }
            if let ready { continuation.resume(with: ready) }
        }
    }

    public func listen(
        streamHandler: @escaping @Sendable (RPCStream<Inbound, Outbound>, ServerContext) async -> Void
    ) async throws {
        let fd: Int32
        do {
            fd = try bind()
        } catch {
            reportListening(.failure(error))
            throw error
        }
        let started: Bool = registry.withLock { registry in
            guard !registry.stopping else { return false }
            registry.listener = fd
            registry.accepting = true
            return true
        }
        guard started else {
            close(fd)
            reportListening(.success(()))
            return
        }
        do {
            try spawnThread(name: "grpc-accept") { [self] in acceptLoop(fd, handler: streamHandler) }
        } catch {
            registry.withLock { $0.accepting = false; $0.listener = nil }
            close(fd)
            reportListening(.failure(error))
            throw error
        }
        reportListening(.success(()))
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let done = registry.withLock { registry -> Bool in
                    if !registry.accepting && registry.connections.isEmpty { return true }
                    registry.finished = continuation
                    return false
                }
                if done { continuation.resume() }
            }
        } onCancel: {
            stop(closingConnections: true)
        }
    }

    public func beginGracefulShutdown() {
        stop(closingConnections: false)
    }

    private func reportListening(_ result: Result<Void, any Error>) {
        let waiters = registry.withLock { registry -> [CheckedContinuation<Void, any Error>] in
            registry.listenResult = result
            defer { registry.listening = [] }
            return registry.listening
        }
        for waiter in waiters { waiter.resume(with: result) }
    }

    private func bind() throws(BerthError) -> Int32 {
        let fd = try UnixSocket.listen(path: path, mode: socketMode, backlog: 256)
        if let socketGroup, chown(path, uid_t.max, socketGroup) != 0 {
            let error = errnoError("chown socket \(path) to group \(socketGroup)")
            close(fd)
            throw error
        }
        return fd
    }

    private func stop(closingConnections: Bool) {
        let (listener, connections) = registry.withLock { registry -> (Int32?, [HTTP2Connection]) in
            registry.stopping = true
            return (registry.listener, Array(registry.connections.values))
        }
        // Wakes the accept thread, which closes the socket; the number stays ours until then.
        if let listener { _ = shutdown(listener, Int32(SHUT_RDWR)) }
        for connection in connections {
            if closingConnections {
                connection.close(reason: "server stopped")
            } else {
                connection.beginGracefulShutdown()
            }
        }
    }

    private func acceptLoop(_ listener: Int32, handler: @escaping @Sendable (RPCStream<Inbound, Outbound>, ServerContext) async -> Void) {
        let peer = "unix:\(path)"
        while true {
            let client = cberth_accept4(listener, Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue))
            if client < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                if registry.withLock({ $0.stopping }) { break }
                // EMFILE and friends: wait for descriptors to free up rather than spin.
                usleep(100_000)
                continue
            }
            do {
                let connection = try HTTP2Connection(fd: client, limits: limits, peer: peer, directMethods: directMethods,
                                                     handler: handler) { [self] closed in
                    removed(closed)
                }
                let accepted = registry.withLock { registry -> Bool in
                    guard !registry.stopping else { return false }
                    registry.connections[ObjectIdentifier(connection)] = connection
                    return true
                }
                guard accepted else {
                    close(client)
                    continue
                }
                do {
                    try connection.start()
                } catch {
                    registry.withLock { _ = $0.connections.removeValue(forKey: ObjectIdentifier(connection)) }
                    close(client)
                }
            } catch {
                close(client)
            }
        }
        close(listener)
        let finished = registry.withLock { registry -> CheckedContinuation<Void, Never>? in
            registry.listener = nil
            registry.accepting = false
            guard registry.connections.isEmpty else { return nil }
            defer { registry.finished = nil }
            return registry.finished
        }
        finished?.resume()
    }

    private func removed(_ connection: HTTP2Connection) {
        let finished = registry.withLock { registry -> CheckedContinuation<Void, Never>? in
            registry.connections.removeValue(forKey: ObjectIdentifier(connection))
            guard !registry.accepting, registry.connections.isEmpty else { return nil }
            defer { registry.finished = nil }
            return registry.finished
        }
        finished?.resume()
    }
}

/// The `<socket>.lock` files this process holds, one per socket path.
///
/// A `flock` belongs to an open file description, so a second `open` + `flock` of the same lock
/// file from this process would fail as if another daemon held it. Keeping the locks here makes
/// a second `listen` in the same process (a restarted server, a test) succeed, and keeps each lock
/// until the process exits.
enum SocketLocks {
    private static let held = Mutex<[String: FileLock]>([:])

    static func acquire(for socketPath: String) throws(BerthError) {
        let lockPath = socketPath + ".lock"
        try held.withLock { (locks: inout [String: FileLock]) throws(BerthError) in
            if locks[lockPath] != nil { return }
            do throws(BerthError) {
                locks[lockPath] = try FileLock(path: lockPath)
            } catch {
                guard error.code == .unavailable else { throw error }
                throw .unavailable("another berthd is serving \(socketPath) (it holds \(lockPath))")
            }
        }
    }
}
