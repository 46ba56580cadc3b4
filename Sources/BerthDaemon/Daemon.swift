#if canImport(Glibc)
import Glibc
#endif
import BerthContent
import BerthCore
import BerthGRPC
import BerthMetadata
import BerthRuntime
import BerthServices
import BerthSnapshots
import BerthSystem
import BerthTTRPC
import Foundation
import GRPCCore
import Logging
import ServiceLifecycle

/// berthd assembled: stores opened in dependency order, services wired to them, one gRPC
/// server on the unix socket, all stopped together on SIGTERM/SIGINT.
public final class Daemon: Sendable {
    public let config: Config
    let logger: Logger
    let rootLock: FileLock
    let metadata: MetadataStore
    let differ: Differ
    let gc: GarbageCollector
    let events: EventBus
    let shims: ShimManager
    let uuid: String

    /// Opens the root and state directories and the stores. Throws `unavailable` if another
    /// berthd holds the root.
    public init(config: Config, logger: Logger) throws(BerthError) {
        self.config = config
        self.logger = logger
        umask(0o022)
        Memory.configureAllocator()
        try FileSystem.makeDirectories(config.root, mode: 0o711)
        try FileSystem.makeDirectories(config.state, mode: 0o711)
        do {
            rootLock = try FileLock(path: "\(config.root)/berthd.lock")
        } catch where error.code == .unavailable {
            throw .unavailable("another berthd is using root \(config.root)")
        }
        uuid = try Self.serverUUID(root: config.root)
        let blobs = try BlobStore(root: "\(config.root)/content")
        let gcBox = GCBox()
        let snapshotters: [any Snapshotter] = [
            try OverlaySnapshotter(root: "\(config.root)/snapshots/overlayfs"),
            try NativeSnapshotter(root: "\(config.root)/snapshots/native"),
        ]
        metadata = try MetadataStore(path: "\(config.root)/metadata.db", blobs: blobs, snapshotters: snapshotters,
                                     onDeletion: { gcBox.collector?.schedule() })
        differ = try Differ(store: metadata, scratch: "\(config.root)/tmp")
        gc = GarbageCollector(store: metadata, logger: logger)
        gcBox.collector = gc
        events = EventBus(logger: logger)
        let events = events
        shims = ShimManager(
            configuration: ShimManagerConfiguration(
                state: config.state, grpcAddress: config.grpc.address, ttrpcAddress: "\(config.grpc.address).ttrpc",
                publishBinary: Self.executablePath, runtimes: config.runtimes.mapValues(\.shim),
                debug: ["debug", "trace"].contains(config.debug.level.lowercased())),
            metadata: metadata, logger: logger,
            publish: { namespace, topic, event in events.publish(namespace: namespace, topic: topic, event: event) })
    }

    /// This executable (`/proc/self/exe`), passed to shims as `-publish-binary`.
    static var executablePath: String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard n > 0 else { return CommandLine.arguments.first ?? "berthd" }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// A UUID made once per root and kept in `<root>/uuid`.
    static func serverUUID(root: String) throws(BerthError) -> String {
        let path = "\(root)/uuid"
        if let stored = (try? FileSystem.readString(path))?.trimmingCharacters(in: .whitespacesAndNewlines),
           UUID(uuidString: stored) != nil {
            return stored.lowercased()
        }
        let uuid = UUID().uuidString.lowercased()
        try FileSystem.writeAtomically(Array(uuid.utf8), to: path, mode: 0o644)
        return uuid
    }

    var services: Services {
        Services(
            version: VersionService(revision: BuildInfo.revision),
            introspection: IntrospectionService(plugins: Plugins.table, uuid: uuid, logger: logger),
            namespaces: NamespacesService(store: metadata, events: events, logger: logger),
            content: ContentService(store: metadata, events: events, logger: logger),
            images: ImagesService(store: metadata, gc: gc, events: events, logger: logger),
            leases: LeasesService(store: metadata, gc: gc, logger: logger),
            containers: ContainersService(store: metadata, events: events, logger: logger),
            snapshots: SnapshotsService(store: metadata, events: events, logger: logger),
            diff: DiffService(differ: differ, logger: logger),
            events: EventsService(bus: events, logger: logger),
            tasks: TasksService(store: metadata, shims: shims, logger: logger))
    }

    /// The ttrpc socket beside the gRPC one, where shims forward their events (containerd's
    /// `TTRPC_ADDRESS`).
    public var ttrpcAddress: String { "\(config.grpc.address).ttrpc" }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully: in-flight calls finish,
    /// event subscriptions end, the sockets are removed and the database closed.
    public func run() async throws {
        // Snapshots a crash left half-made go before any client can see them.
        try await metadata.recoverSnapshots()
        let ttrpc = TTRPCServer()
        EventsTTRPCService(bus: events, logger: logger).register(on: ttrpc)
        try ttrpc.listen(path: ttrpcAddress)
        defer { ttrpc.close() }
        // Shims of an earlier berthd are found again (or cleaned up) before any client asks.
        await shims.recover()
        // On the way out shims keep running; their connections closing is no death.
        defer { shims.stop() }
        // Each connection's thread reads its calls and runs their handlers (see GRPCUnixTransport).
        let idle = IdleMemoryRelease(metadata: metadata)
        let services = self.services
        let transport = try GRPCUnixTransport(
            path: config.grpc.address,
            socketGroup: config.grpc.gid == 0 ? nil : config.grpc.gid,
            maxMessageSize: config.grpc.maxRecvMessageSize,
            directMethods: DirectMethods(afterEachCall: { idle.noteCall() }).all(services))
        let server = GRPCServer(transport: transport, services: services.all,
                                interceptors: [NamespaceInterceptor(afterEachCall: { idle.noteCall() })])
        let serving = ServerService(server: server, transport: transport, events: events, address: config.grpc.address, logger: logger)
        let collection = PeriodicCollection(gc: gc, interval: config.gcInterval, logger: logger)
        var configuration = ServiceGroupConfiguration(
            services: [.init(service: serving), .init(service: collection, successTerminationBehavior: .gracefullyShutdownGroup,
                                                        failureTerminationBehavior: .gracefullyShutdownGroup)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger)
        // In-flight calls get this long to finish after SIGTERM; then they are cancelled.
        configuration.maximumGracefulShutdownDuration = .seconds(10)
        configuration.maximumCancellationDuration = .seconds(5)
        let group = ServiceGroup(configuration: configuration)
        try await group.run()
        await shims.finishTeardowns()
        try? FileSystem.remove(config.grpc.address)
        try? metadata.close()
        logger.info("berthd stopped")
    }
}

/// berthd's gRPC services, one value each.
struct Services {
    let version: VersionService
    let introspection: IntrospectionService
    let namespaces: NamespacesService
    let content: ContentService
    let images: ImagesService
    let leases: LeasesService
    let containers: ContainersService
    let snapshots: SnapshotsService
    let diff: DiffService
    let events: EventsService
    let tasks: TasksService

    var all: [any RegistrableRPCService] {
        [version, introspection, namespaces, content, images, leases, containers, snapshots, diff, events, tasks]
    }
}

/// Lets the metadata store's deletion hook reach the collector built after it.
private final class GCBox: @unchecked Sendable {
    // Written once during Daemon.init, before any request can delete anything.
    var collector: GarbageCollector?
}

/// The gRPC server as a lifecycle service.
struct ServerService: Service {
    let server: GRPCServer<GRPCUnixTransport>
    let transport: GRPCUnixTransport
    let events: EventBus
    let address: String
    let logger: Logger

    func run() async throws {
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { try await server.serve() }
                try await transport.waitUntilListening()
                logger.info("serving containerd API", metadata: ["address": "\(address)"])
            }
        } onGracefulShutdown: {
            logger.info("shutting down")
            events.finishAll()
            server.beginGracefulShutdown()
        }
    }
}

/// Collects garbage shortly after start, as containerd's scheduler does (cleaning what a crash
/// left behind), and then periodically, so leases that expire (`containerd.io/gc.expire`) are
/// collected even when no deletion schedules a collection. Deletions schedule their own.
struct PeriodicCollection: Service {
    let gc: GarbageCollector
    let interval: Duration
    let logger: Logger

    func run() async throws {
        // Shutdown cancels the sleep; that is this service's normal end, not a failure.
        try? await cancelWhenGracefulShutdown {
            try await Task.sleep(for: .milliseconds(100))
            var first = true
            while !Task.isCancelled {
                do { try await gc.collect() } catch {
                    logger.error("garbage collection failed", metadata: ["error": "\(error)"])
                }
                if first { logger.info("start-up garbage collection done") }
                first = false
                try await Task.sleep(for: interval)
            }
        }
    }
}

public enum BuildInfo {
    /// Set at build time by scripts that know the git revision; empty otherwise.
    public static let revision = ""
}
