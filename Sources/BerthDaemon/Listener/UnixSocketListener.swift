#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import BerthCore
import BerthSystem
import GRPCNIOTransportHTTP2Posix  // re-exports GRPCNIOTransportCore (HTTP2ServerTransport.Custom & co.)
import NIOCore
import NIOPosix
import Synchronization

/// Binds berthd's gRPC unix socket and puts a ``PingResponder`` in front of every connection.
///
/// grpc-swift-nio-transport's own `HTTP2ServerTransport.Posix` cannot take extra channel handlers,
/// and its nio-http2 control-frame limit cuts long grpc-go uploads off (see ``PingResponder``).
/// This factory plugs into the public `HTTP2ServerTransport.Custom` instead: it binds the socket
/// with NIO's `ServerBootstrap`, adds the responder first in each accepted connection's pipeline
/// and then lets the transport's `ConnectionConfigurator` build the usual gRPC pipeline behind it.
///
/// Before binding it
/// 1. creates the socket's missing parent directories (mode 0711, as containerd does for
///    `/run/containerd`);
/// 2. takes an exclusive `flock` on `<socket>.lock`, held for the rest of the process, so a second
///    berthd fails with "another berthd is serving <path>" instead of stealing a live socket;
/// 3. removes a stale socket file (only a socket: NIO refuses to delete any other file type).
///
/// After binding it sets the socket's mode (0660 by default) and, if given, its group.
///
/// Use ``makeUnixServerTransport(path:socketGroup:maxMessageSize:targetWindowSize:maxFrameSize:pingBudget:eventLoopGroup:)``
/// unless you need to build the transport configuration yourself.
public struct UnixSocketListener: HTTP2ServerTransport.ListenerFactory {
    /// `sun_path` holds 108 bytes on Linux, including the terminating NUL.
    public static let maxPathBytes = 107

    /// The socket's path, as given (relative paths are resolved against the working directory).
    public let path: String
    /// The group the socket is handed to after binding; `nil` keeps the process's group.
    public let socketGroup: gid_t?
    /// The socket's permission bits, set right after binding.
    public let socketMode: mode_t
    /// The flood-guard budget of each connection's ``PingResponder``.
    public let pingBudget: PingResponder.Budget
    public let eventLoopGroup: any EventLoopGroup

    /// Creates a listener for `path`.
    ///
    /// - Throws: `BerthError` `invalidArgument` if `path` is empty, contains a NUL byte or does not
    ///   fit `sun_path` (107 bytes).
    public init(
        path: String,
        socketGroup: gid_t? = nil,
        socketMode: mode_t = 0o660,
        pingBudget: PingResponder.Budget = .default,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) throws(BerthError) {
        try Self.validate(path: path)
        self.path = path
        self.socketGroup = socketGroup
        self.socketMode = socketMode
        self.pingBudget = pingBudget
        self.eventLoopGroup = eventLoopGroup
    }

    /// Checks that `path` can be bound as a unix socket.
    public static func validate(path: String) throws(BerthError) {
        guard !path.isEmpty else {
            throw .invalidArgument("socket path: empty")
        }
        guard !path.utf8.contains(0) else {
            throw .invalidArgument("socket path \"\(path)\": contains a NUL byte")
        }
        let length = path.utf8.count
        guard length <= maxPathBytes else {
            throw .invalidArgument(
                "socket path \"\(path)\": \(length) bytes, longer than the \(maxPathBytes) a unix socket address holds")
        }
    }

    /// Creates the socket's missing parent directories and takes `<path>.lock`, which this
    /// process then holds until it exits. Idempotent within the process.
    ///
    /// `makeListeningChannel` calls it too; call it early to fail fast, before anything else
    /// starts. It makes blocking syscalls (mkdir, open, a non-blocking flock).
    ///
    /// - Throws: `BerthError` `unavailable` ("another berthd is serving <path>") if another
    ///   process holds the lock; the errno-mapped `BerthError` if a directory or the lock file
    ///   cannot be created.
    public func prepare() throws(BerthError) {
        try FileSystem.makeDirectories(FileSystem.parentDirectory(of: path), mode: 0o711)
        try SocketLocks.acquire(for: path)
    }

    public func makeListeningChannel(
        listenerConfigurator: HTTP2ServerTransport.ListenerConfigurator,
        connectionConfigurator: HTTP2ServerTransport.ConnectionConfigurator
    ) async throws -> NIOAsyncChannel<HTTP2ServerTransport.ConnectionConfigurator.ConnectionChannel, Never> {
        let path = self.path
        // Usually done already by `makeUnixServerTransport`; mkdir and open/flock may block, so
        // keep them off the cooperative pool.
        try await runBlocking { () throws(BerthError) in try self.prepare() }

        let budget = self.pingBudget
        let channel = try await ServerBootstrap(group: eventLoopGroup)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelInitializer { channel in
                // Registers the channel for graceful shutdown (and the debugging callbacks).
                listenerConfigurator.configure(channel: channel)
            }
            .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true) { channel in
                channel.eventLoop.makeCompletedFuture {
                    // First in the pipeline, so it sees the raw bytes before nio-http2 does.
                    try channel.pipeline.syncOperations.addHandler(PingResponder(budget: budget))
                }.flatMap {
                    connectionConfigurator.configure(channel: channel, tls: .none)
                }
            }

        // The socket exists with the umask's mode until here; with berthd's usual umask (022)
        // nobody but the owner can connect in that window, since connect needs write permission.
        let mode = socketMode
        let group = socketGroup
        do {
            try await runBlocking { () throws(BerthError) in
                guard chmod(path, mode) == 0 else { throw errnoError("chmod socket \(path)") }
                if let group {
                    guard chown(path, uid_t.max, group) == 0 else {
                        throw errnoError("chown socket \(path) to group \(group)")
                    }
                }
            }
        } catch {
            try? await channel.channel.close()
            throw error
        }
        return channel
    }
}

/// The `<socket>.lock` files this process holds, one per socket path.
///
/// A `flock` belongs to an open file description, so a second `open` + `flock` of the same lock
/// file from this process would fail as if another daemon held it. Keeping the locks here makes
/// a second `listen` in the same process (a restarted server, a test) succeed, and keeps each lock
/// until the process exits.
private enum SocketLocks {
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

/// Creates the gRPC server transport for berthd's unix socket, tuned for containerd's clients.
///
/// Plug it into a server as
/// ```swift
/// let transport = try makeUnixServerTransport(path: "/run/berth/berthd.sock")
/// let server = GRPCServer(transport: transport, services: services, interceptors: interceptors)
/// try await server.serve()
/// ```
/// `server.beginGracefulShutdown()` (or cancelling `serve()`) closes the socket.
///
/// Configuration, against grpc-swift's defaults:
/// - `rpc.maxRequestPayloadSize` = `maxMessageSize` (16 MiB, containerd's
///   `defaults.DefaultMaxRecvMsgSize`; grpc-swift's default is 4 MiB and `ctr content ingest`
///   sends 1 MiB writes);
/// - `http2.targetWindowSize` = `targetWindowSize` (16 MiB instead of 65535: halves the time of a
///   256 MB ingest);
/// - `http2.maxFrameSize` = `maxFrameSize` (16 KiB, the HTTP/2 default; grpc-go never sends larger);
/// - max concurrent streams: 4096, advertised. Unadvertised, nio-http2 holds clients to 100 and
///   closes the connection with PROTOCOL_ERROR beyond that, while grpc-go assumes no limit (as
///   containerd's grpc-go server sets none): `ctr images pull` of a 130-layer image keeps a
///   `Content/Write` stream open per layer and would lose its connection.
/// - keepalive: clients may ping without calls in progress, at most every 10 s before pings count
///   as strikes. Only the PINGs ``PingResponder`` forwards (a flood) ever reach that policing.
///
/// - Parameters:
///   - path: The socket path; at most 107 bytes.
///   - socketGroup: The group to give the socket to (containerd's `[grpc] gid`), or `nil`.
///   - pingBudget: See ``PingResponder/Budget``.
///   - eventLoopGroup: The event loops serving connections.
/// It creates the socket's parent directories and takes `<path>.lock` at once (see
/// ``UnixSocketListener/prepare()``), so a second daemon fails here, before it starts anything.
/// Binding happens later, in `serve()`. Errors from there (chmod/chown, NIO's bind error) reach
/// the caller wrapped by grpc-swift as `RuntimeError(code: .transportError, message: "Server
/// transport threw an error.", cause: <the error>)`.
///
/// - Throws: `BerthError` `invalidArgument` for a bad path; `unavailable` ("another berthd is
///   serving <path>") if another process holds `<path>.lock`; the errno-mapped `BerthError` if a
///   directory or the lock file cannot be created.
public func makeUnixServerTransport(
    path: String,
    socketGroup: gid_t? = nil,
    maxMessageSize: Int = 16 << 20,
    targetWindowSize: Int = 16 << 20,
    maxFrameSize: Int = 1 << 14,
    maxConcurrentStreams: Int = 4096,
    pingBudget: PingResponder.Budget = .default,
    eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
) throws(BerthError) -> HTTP2ServerTransport.Custom<UnixSocketListener> {
    let listener = try UnixSocketListener(
        path: path, socketGroup: socketGroup, pingBudget: pingBudget, eventLoopGroup: eventLoopGroup)
    try listener.prepare()

    var config = HTTP2ServerTransport.Custom<UnixSocketListener>.Config.defaults
    config.rpc.maxRequestPayloadSize = maxMessageSize
    config.http2.targetWindowSize = targetWindowSize
    config.http2.maxFrameSize = maxFrameSize
    config.http2.maxConcurrentStreams = maxConcurrentStreams
    config.connection.keepalive.clientBehavior = HTTP2ServerTransport.Config.ClientKeepaliveBehavior(
        minPingIntervalWithoutCalls: .seconds(10), allowWithoutCalls: true)
    return HTTP2ServerTransport.Custom(listenerFactory: listener, config: config)
}
