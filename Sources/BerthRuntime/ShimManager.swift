import BerthAPI
import BerthCore
import BerthMetadata
import BerthSystem
import BerthTTRPC
import Foundation
import Logging
import SwiftProtobuf
import Synchronization

/// Publishes a daemon-side task event (`/tasks/exit`, `/tasks/delete` after a shim died).
public typealias TaskEventPublisher = @Sendable (_ namespace: String, _ topic: String, _ event: any SwiftProtobuf.Message) -> Void

/// Where shims live and how they are started.
public struct ShimManagerConfiguration: Sendable {
    /// berthd's state directory; bundles go under `<state>/shims`.
    public var state: String
    /// berthd's gRPC socket (the shim's `-address`, `GRPC_ADDRESS`).
    public var grpcAddress: String
    /// berthd's ttrpc socket (`TTRPC_ADDRESS`), where shims forward events.
    public var ttrpcAddress: String
    /// The berthd executable (`-publish-binary`).
    public var publishBinary: String
    /// Runtime name → shim binary, from the config file.
    public var runtimes: [String: String]
    /// Passes `-debug` to shims.
    public var debug: Bool

    public init(state: String, grpcAddress: String, ttrpcAddress: String, publishBinary: String,
                runtimes: [String: String] = [:], debug: Bool = false) {
        self.state = state
        self.grpcAddress = grpcAddress
        self.ttrpcAddress = ttrpcAddress
        self.publishBinary = publishBinary
        self.runtimes = runtimes
        self.debug = debug
    }

    public var shimsRoot: String { "\(state)/shims" }
}

/// What a new task runs: the container's record plus the client's Create request.
public struct TaskCreation: Sendable {
    public var namespace: Namespace
    public var id: String
    public var runtime: String
    /// The OCI spec's JSON bytes (`config.json`).
    public var spec: [UInt8]
    /// The container's runtime options (sent to `start` on stdin and to Create when the request has none).
    public var runtimeOptions: TypedValue?
    /// The request's task options.
    public var taskOptions: TypedValue?
    public var rootfs: [Mount]
    public var stdin: String
    public var stdout: String
    public var stderr: String
    public var terminal: Bool
    public var checkpoint: String

    public init(namespace: Namespace, id: String, runtime: String, spec: [UInt8], runtimeOptions: TypedValue? = nil,
                taskOptions: TypedValue? = nil, rootfs: [Mount] = [], stdin: String = "", stdout: String = "",
                stderr: String = "", terminal: Bool = false, checkpoint: String = "") {
        self.namespace = namespace
        self.id = id
        self.runtime = runtime
        self.spec = spec
        self.runtimeOptions = runtimeOptions
        self.taskOptions = taskOptions
        self.rootfs = rootfs
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.terminal = terminal
        self.checkpoint = checkpoint
    }
}

/// The live tasks of every namespace and the shims behind them (containerd's runtime v2
/// `TaskManager` plus `ShimManager`).
///
/// - Create: bundle → `log` FIFO → `<shim> … start` → `shim-binary-path` → ttrpc connect → `Create`.
///   Any failure undoes all of it (shim `Delete`, `Shutdown`, the `delete` action, the bundle).
/// - Delete: `Delete` → `Shutdown` (3 s) → close → the `delete` action → remove the bundle.
/// - A shim whose connection ends unasked is cleaned up as containerd's `cleanupAfterDeadShim`
///   does: the `delete` action, `/tasks/exit` and `/tasks/delete` events, the bundle removed.
/// - ``recover()`` finds the shims of an earlier berthd again from their bundles.
///
/// Shims outlive berthd: stopping the daemon leaves them running.
public final class ShimManager: Sendable {
    private struct Key: Hashable {
        var namespace: String
        var id: String
    }

    private enum Entry {
        /// Being created or recovered; not visible to callers yet.
        case pending(UInt64)
        case live(ShimTask)
        /// Deleted; its shim is being shut down and its bundle removed. A new task of the same id
        /// waits for that (same bundle directory, runtime state and shim socket).
        case retiring(UInt64, Teardown)
    }

    public let configuration: ShimManagerConfiguration
    public let resolver: ShimResolver
    private let logger: Logger
    private let publish: TaskEventPublisher
    private let metadata: MetadataStore?
    private let table = Mutex<[Key: Entry]>([:])
    private let nextToken = Atomic<UInt64>(0)
    /// berthd's environment, read once: shims inherit it.
    private let inheritedEnvironment = ProcessInfo.processInfo.environment
    private let stopping = Atomic<Bool>(false)

    /// How long `Shutdown` may take before the shim is left to itself (containerd's
    /// `io.containerd.timeout.shim.shutdown`).
    static let shutdownTimeout: Duration = .seconds(3)
    /// How long a shim's `delete` action may run (`io.containerd.timeout.shim.cleanup`, generous).
    static let cleanupTimeout: Duration = .seconds(10)
    /// How long a recovered shim has to answer `Connect` (`io.containerd.timeout.shim.load`).
    static let loadTimeout: Duration = .seconds(5)
    /// How long a shim's `start` action may run.
    static let startTimeout: Duration = .seconds(60)

    public static let exitTopic = "/tasks/exit"
    public static let deleteTopic = "/tasks/delete"

    public init(configuration: ShimManagerConfiguration, metadata: MetadataStore?, logger: Logger,
                publish: @escaping TaskEventPublisher) {
        self.configuration = configuration
        self.metadata = metadata
        self.logger = logger
        self.publish = publish
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .split(separator: ":").map(String.init)
        resolver = ShimResolver(configured: configuration.runtimes,
                                daemonDirectory: FileSystem.parentDirectory(of: configuration.publishBinary),
                                searchPath: path)
    }

    // MARK: Looking tasks up

    /// The live task `id` in `namespace`.
    ///
    /// - Throws: `notFound` when there is none.
    public func task(_ namespace: Namespace, id: String) throws(BerthError) -> ShimTask {
        let entry = table.withLock { $0[Key(namespace: namespace.name, id: id)] }
        guard case .live(let task) = entry else {
            throw .notFound("task \(quoted(id)) not found in namespace \(quoted(namespace.name))")
        }
        return task
    }

    /// The live tasks of `namespace`, ordered by id.
    public func tasks(_ namespace: Namespace) -> [ShimTask] {
        table.withLock { table in
            table.compactMap { key, entry -> ShimTask? in
                guard key.namespace == namespace.name, case .live(let task) = entry else { return nil }
                return task
            }
        }.sorted { $0.id < $1.id }
    }

    /// Every live task.
    public func allTasks() -> [ShimTask] {
        table.withLock { table in
            table.values.compactMap { entry -> ShimTask? in
                if case .live(let task) = entry { return task }
                return nil
            }
        }
    }

    /// Stops reacting to shim connections that end (berthd is shutting down; shims live on).
    public func stop() {
        stopping.store(true, ordering: .relaxed)
    }

    // MARK: Create

    /// Starts a shim for the task and has it create the task.
    ///
    /// - Returns: the task and the PID of its init process.
    /// - Throws: `alreadyExists` when the task exists; `notFound` when the runtime's shim binary
    ///   is missing; the shim's error (its code) when `start` or `Create` fails. Nothing is left
    ///   behind on failure.
    public func create(_ creation: TaskCreation) async throws(BerthError) -> (task: ShimTask, pid: UInt32) {
        let key = Key(namespace: creation.namespace.name, id: creation.id)
        let token = nextToken.add(1, ordering: .relaxed).newValue
        while let retiring = try table.withLock({ table throws(BerthError) -> Teardown? in
            if case .retiring(_, let teardown) = table[key] { return teardown }
            guard table[key] == nil else {
                throw .alreadyExists("task \(quoted(creation.id)) in namespace \(quoted(creation.namespace.name)): already exists")
            }
            table[key] = .pending(token)
            return nil
        }) {
            await retiring.wait()
        }
        var bundle: Bundle?
        var log: ShimLog?
        var binary = ""
        var task: ShimTask?
        do throws(BerthError) {
            binary = try resolver.resolve(creation.runtime)
            bundle = try Bundle.create(root: configuration.shimsRoot, namespace: creation.namespace, id: creation.id,
                                       spec: creation.spec)
            log = try ShimLog(path: bundle!.logPath, logger: logger, namespace: creation.namespace.name, id: creation.id)
            let address = try await startShim(binary: binary, bundle: bundle!, namespace: creation.namespace, id: creation.id,
                                              options: creation.taskOptions ?? creation.runtimeOptions)
            try bundle!.writeBinaryPath(binary)
            let client = try TTRPCClient(address: address, onClose: { [weak self] in
                self?.shimClosed(key, token: token)
            })
            task = ShimTask(namespace: creation.namespace, id: creation.id, runtime: creation.runtime, binary: binary,
                            address: address, bundle: bundle!, client: client, log: log, token: token)
            var request = Containerd_Task_V2_CreateTaskRequest()
            request.id = creation.id
            request.bundle = bundle!.path
            request.rootfs = creation.rootfs.map { mount in
                var proto = Containerd_Types_Mount()
                proto.type = mount.type
                proto.source = mount.source
                proto.options = mount.options
                return proto
            }
            request.terminal = creation.terminal
            request.stdin = creation.stdin
            request.stdout = creation.stdout
            request.stderr = creation.stderr
            request.checkpoint = creation.checkpoint
            if let options = creation.taskOptions ?? creation.runtimeOptions {
                request.options = Self.any(options)
            }
            let response: Containerd_Task_V2_CreateTaskResponse
            do {
                response = try await task!.call("Create", request)
            } catch {
                // containerd's TaskManager.Create words it so; ctr prints it.
                throw BerthError(error.code, "failed to create shim task: \(error.message)", underlying: error.underlying)
            }
            table.withLock { $0[key] = .live(task!) }
            // The connection may have ended before the task was listed; then nobody else cleans up.
            if task!.client.isClosed { shimClosed(key, token: token) }
            logger.debug("task created", metadata: ["namespace": "\(creation.namespace)", "id": "\(creation.id)",
                                                    "shim": "\(binary)", "pid": "\(response.pid)"])
            return (task!, response.pid)
        } catch {
            // The key stays pending until the clean-up is done, so a retry cannot meet it halfway.
            defer {
                table.withLock { table in
                    if case .pending(token) = table[key] { table[key] = nil }
                }
            }
            if let task {
                // containerd: the shim's Delete, Shutdown and close, then the delete action.
                var request = Containerd_Task_V2_DeleteRequest()
                request.id = creation.id
                let _: Containerd_Task_V2_DeleteResponse? = try? await task.call("Delete", request, timeout: Self.cleanupTimeout)
                await teardown(task)
            } else {
                log?.stop()
                if let bundle {
                    if bundle.recordedBinary != nil || FileSystem.exists(bundle.addressPath) {
                        _ = await runDeleteAction(binary: binary, bundle: bundle, namespace: creation.namespace, id: creation.id)
                    }
                    await removeBundle(bundle)
                }
            }
            logger.debug("task create failed", metadata: ["namespace": "\(creation.namespace)", "id": "\(creation.id)",
                                                          "error": "\(error)"])
            throw error
        }
    }

    /// Runs `<shim> … start` in the bundle; returns the address it printed.
    private func startShim(binary: String, bundle: Bundle, namespace: Namespace, id: String,
                           options: TypedValue?) async throws(BerthError) -> String {
        var stdin: [UInt8] = []
        if let options {
            do { stdin = try Self.any(options).serializedBytes() } catch {
                throw .internal("task \(id): encode runtime options", underlying: SendableErrorBox(error))
            }
        }
        let command = ShimCommand(binary: binary, arguments: shimArguments(namespace: namespace, id: id) + ["start"],
                                  directory: bundle.path, environment: shimEnvironment(namespace: namespace), stdin: stdin,
                                  combineOutput: true, timeout: Self.startTimeout)
        let output = try await command.run()
        let text = output.stdoutText
        guard output.succeeded else {
            let why = output.timedOut ? "no answer within \(Self.startTimeout)" : "exit status \(output.status)"
            throw .internal("task \(quoted(id)): start shim \(binary): \(text.isEmpty ? why : "\(text): \(why)")")
        }
        let address = ShimAddress.parse(text)
        guard !address.isEmpty, !address.contains("\n") else {
            throw .internal("task \(quoted(id)): shim \(binary) start printed no address: \(quoted(text))")
        }
        return address
    }

    private func shimArguments(namespace: Namespace, id: String) -> [String] {
        ["-namespace", namespace.name, "-address", configuration.grpcAddress, "-publish-binary", configuration.publishBinary,
         "-id", id] + (configuration.debug ? ["-debug"] : [])
    }

    private func shimEnvironment(namespace: Namespace) -> [String: String] {
        var environment = inheritedEnvironment
        environment["TTRPC_ADDRESS"] = configuration.ttrpcAddress
        environment["GRPC_ADDRESS"] = configuration.grpcAddress
        environment["NAMESPACE"] = namespace.name
        environment["MAX_SHIM_VERSION"] = "2"
        environment["GOMAXPROCS"] = "2"
        return environment
    }

    /// A `google.protobuf.Any` with the type URL exactly as stored (bare names, as typeurl makes them).
    static func any(_ value: TypedValue) -> Google_Protobuf_Any {
        var any = Google_Protobuf_Any()
        any.typeURL = value.typeURL
        any.value = Data(value.value)
        return any
    }

    // MARK: Delete

    /// Deletes the task's init process and retires its shim.
    ///
    /// - Throws: the shim's error for `Delete` (the task stays then).
    public func delete(_ task: ShimTask) async throws(BerthError) -> Containerd_Task_V2_DeleteResponse {
        var request = Containerd_Task_V2_DeleteRequest()
        request.id = task.id
        let response: Containerd_Task_V2_DeleteResponse = try await task.call("Delete", request)
        // The answer does not wait for the shim's shutdown and the bundle's removal: the task is
        // gone for every caller at once, and a new task of the same id waits for them. They run
        // as one job on a blocking thread, where the Shutdown call's deadline needs no timer.
        let key = Key(namespace: task.namespace.name, id: task.id)
        let teardown = Teardown()
        let retiring = table.withLock { entries -> Bool in
            guard case .live(let live) = entries[key], live.token == task.token else { return false }
            entries[key] = .retiring(task.token, teardown)
            return true
        }
        if retiring {
            BlockingThreads.shared.submit { [self] in
                tearDownSynchronously(task, taskDeleted: true)
                table.withLock { entries in
                    if case .retiring(task.token, _) = entries[key] { entries[key] = nil }
                }
                teardown.finish()
            }
        }
        return response
    }

    /// Waits for the teardowns of deleted tasks still running (for a daemon on its way out).
    public func finishTeardowns() async {
        let teardowns = table.withLock { table in
            table.values.compactMap { entry -> Teardown? in
                if case .retiring(_, let teardown) = entry { return teardown }
                return nil
            }
        }
        for teardown in teardowns { await teardown.wait() }
    }

    /// ``tearDownSynchronously(_:taskDeleted:)`` on a blocking thread.
    private func teardown(_ task: ShimTask, taskDeleted: Bool = false) async {
        _ = try? await runBlocking { [self] () throws(BerthError) in tearDownSynchronously(task, taskDeleted: taskDeleted) }
    }

    /// Shutdown, close, the `delete` action, the bundle: after the task is out of the table. Blocks.
    ///
    /// `taskDeleted`: the shim's `Delete` succeeded, so the runtime's container is gone and the
    /// rootfs unmounted; the `delete` action (another shim and runtime process, about 25 ms) then
    /// runs only when the shim does not shut down cleanly, as containerd retires a shim.
    private func tearDownSynchronously(_ task: ShimTask, taskDeleted: Bool) {
        var request = Containerd_Task_V2_ShutdownRequest()
        request.id = task.id
        var shutDown = true
        do {
            let _: Google_Protobuf_Empty = try task.callSynchronously("Shutdown", request, timeout: Self.shutdownTimeout)
        } catch where error.code == .unavailable {
            // The shim exited while answering: what Shutdown is for.
        } catch {
            shutDown = false
            logger.warning("shim shutdown failed", metadata: ["namespace": "\(task.namespace)", "id": "\(task.id)", "error": "\(error)"])
        }
        task.client.close()
        if !(taskDeleted && shutDown) {
            _ = runDeleteActionSynchronously(binary: task.binary, bundle: task.bundle, namespace: task.namespace, id: task.id)
        }
        task.log?.stop()
        removeBundleSynchronously(task.bundle)
    }

    /// Takes the task out of the table if `token` still names it there; whoever gets it cleans up.
    private func claim(_ key: Key, token: UInt64) -> ShimTask? {
        table.withLock { table in
            guard case .live(let task) = table[key], task.token == token else { return nil }
            table[key] = nil
            return task
        }
    }

    /// `<shim> … -bundle B delete`: stops what the dead shim left (runc delete --force, unmount).
    /// Returns its `DeleteResponse`, or nil when it failed.
    private func runDeleteAction(binary: String, bundle: Bundle, namespace: Namespace, id: String) async -> Containerd_Task_V2_DeleteResponse? {
        guard !binary.isEmpty else { return nil }
        return try? await runBlocking { [self] () throws(BerthError) in
            runDeleteActionSynchronously(binary: binary, bundle: bundle, namespace: namespace, id: id)
        }
    }

    /// ``runDeleteAction(binary:bundle:namespace:id:)`` on the calling thread, which it blocks.
    private func runDeleteActionSynchronously(binary: String, bundle: Bundle, namespace: Namespace,
                                              id: String) -> Containerd_Task_V2_DeleteResponse? {
        guard !binary.isEmpty else { return nil }
        let command = ShimCommand(binary: binary,
                                  arguments: shimArguments(namespace: namespace, id: id) + ["-bundle", bundle.path, "delete"],
                                  directory: bundle.path, environment: shimEnvironment(namespace: namespace),
                                  combineOutput: false, timeout: Self.cleanupTimeout)
        let metadata: Logger.Metadata = ["namespace": "\(namespace)", "id": "\(id)", "shim": "\(binary)"]
        let output: ShimCommand.Output
        do { output = try command.runSynchronously() } catch {
            logger.warning("shim delete action failed", metadata: metadata.merging(["error": "\(error)"]) { $1 })
            return nil
        }
        if !output.stderr.isEmpty {
            logger.warning("shim delete action: \(output.stderrText)", metadata: metadata)
        }
        guard output.succeeded else {
            logger.warning("shim delete action failed", metadata: metadata.merging(["status": "\(output.status)"]) { $1 })
            return nil
        }
        return try? Containerd_Task_V2_DeleteResponse(serializedBytes: output.stdout)
    }

    /// Unmounts the rootfs and removes the bundle, on a blocking thread (not the connection's
    /// thread, which reads and answers that client's other calls).
    private func removeBundle(_ bundle: Bundle) async {
        _ = try? await runBlocking { [self] () throws(BerthError) in removeBundleSynchronously(bundle) }
    }

    private func removeBundleSynchronously(_ bundle: Bundle) {
        do { try bundle.remove() } catch {
            logger.error("cannot remove bundle", metadata: ["bundle": "\(bundle.path)", "error": "\(error)"])
        }
    }

    // MARK: Dead shims

    /// The shim's connection ended (on the poll thread that reads every shim client).
    private func shimClosed(_ key: Key, token: UInt64) {
        guard !stopping.load(ordering: .relaxed), let task = claim(key, token: token) else { return }
        logger.warning("shim connection closed; cleaning up the task", metadata: ["namespace": "\(key.namespace)", "id": "\(key.id)"])
        Task { await self.cleanupAfterDeadShim(namespace: task.namespace, id: task.id, bundle: task.bundle,
                                               binary: task.binary, log: task.log) }
    }

    /// containerd's `cleanupAfterDeadShim`: the `delete` action, then `/tasks/exit` and
    /// `/tasks/delete` with what it reported (or 255 and now), then the bundle goes.
    private func cleanupAfterDeadShim(namespace: Namespace, id: String, bundle: Bundle, binary: String?, log: ShimLog?) async {
        let response = await runDeleteAction(binary: binary ?? "", bundle: bundle, namespace: namespace, id: id)
        log?.stop()
        removeStaleSocket(bundle.recordedAddress)
        let exitedAt = response.flatMap { $0.hasExitedAt ? $0.exitedAt : nil } ?? Google_Protobuf_Timestamp(date: Date())
        let status = response?.exitStatus ?? 255
        let pid = response?.pid ?? 0
        var exit = Containerd_Events_TaskExit()
        exit.containerID = id
        exit.id = id
        exit.pid = pid
        exit.exitStatus = status
        exit.exitedAt = exitedAt
        publish(namespace.name, Self.exitTopic, exit)
        var delete = Containerd_Events_TaskDelete()
        delete.containerID = id
        delete.pid = pid
        delete.exitStatus = status
        delete.exitedAt = exitedAt
        publish(namespace.name, Self.deleteTopic, delete)
        await removeBundle(bundle)
    }

    /// A killed shim leaves its socket file (runc's shim keeps it under /run/containerd/s); it
    /// goes once nothing accepts on it any more (a shim serving a group of tasks still would).
    private func removeStaleSocket(_ address: String?) {
        guard let address, address.hasPrefix("unix://") else { return }
        let path = String(address.dropFirst("unix://".count))
        guard FileSystem.exists(path) else { return }
        do {
            let probe = try TTRPCClient(path: path)
            probe.close()
        } catch where error.code == .unavailable {
            try? FileSystem.remove(path)
        } catch {}
    }

    // MARK: Restart

    /// Finds the shims an earlier berthd started: each bundle's `address` is dialled and must
    /// answer `Connect` within 5 s; bundles without a live shim are cleaned up as after a shim
    /// died. Runs before berthd serves.
    public func recover() async {
        let root = configuration.shimsRoot
        var recovered = 0
        for name in FileSystem.list(root) where !name.hasPrefix(".") {
            let directory = "\(root)/\(name)"
            guard let namespace = try? Namespace(name) else {
                logger.warning("ignoring shim directory with an invalid namespace name", metadata: ["path": "\(directory)"])
                continue
            }
            for id in FileSystem.list(directory) where !id.hasPrefix(".") {
                if await recoverTask(namespace: namespace, id: id, bundle: Bundle(path: "\(directory)/\(id)")) {
                    recovered += 1
                }
            }
        }
        logger.info("shims recovered", metadata: ["tasks": "\(recovered)"])
    }

    private func recoverTask(namespace: Namespace, id: String, bundle: Bundle) async -> Bool {
        let metadata: Logger.Metadata = ["namespace": "\(namespace)", "id": "\(id)"]
        if FileSystem.list(bundle.path).isEmpty {
            await removeBundle(bundle)
            return false
        }
        var runtime = ""
        if let store = self.metadata, let container = try? await store.container(namespace, id: id) {
            runtime = container.runtimeName
        }
        let binary = bundle.recordedBinary ?? (runtime.isEmpty ? nil : try? resolver.resolve(runtime))
        guard let address = bundle.recordedAddress else {
            logger.warning("bundle without a shim address; cleaning up", metadata: metadata)
            await cleanupAfterDeadShim(namespace: namespace, id: id, bundle: bundle, binary: binary, log: nil)
            return false
        }
        let key = Key(namespace: namespace.name, id: id)
        let token = nextToken.add(1, ordering: .relaxed).newValue
        table.withLock { $0[key] = .pending(token) }
        var task: ShimTask?
        do {
            let client = try TTRPCClient(address: address, onClose: { [weak self] in self?.shimClosed(key, token: token) })
            let log = try? ShimLog(path: bundle.logPath, logger: logger, namespace: namespace.name, id: id)
            task = ShimTask(namespace: namespace, id: id, runtime: runtime, binary: binary ?? "", address: address,
                            bundle: bundle, client: client, log: log, token: token)
            let connected = try await task!.connect(timeout: Self.loadTimeout)
            if connected.taskPid == 0 {
                // A shim that never got (or already lost) its task, as containerd 1.7 checks.
                do {
                    _ = try await task!.state()
                } catch where error.code == .notFound {
                    logger.warning("shim serves no task; shutting it down", metadata: metadata)
                    table.withLock { $0[key] = nil }
                    await teardown(task!)
                    return false
                }
            }
            table.withLock { $0[key] = .live(task!) }
            if client.isClosed { shimClosed(key, token: token) }
            logger.info("shim recovered", metadata: metadata.merging(["shim_pid": "\(connected.shimPid)",
                                                                       "task_pid": "\(connected.taskPid)"]) { $1 })
            return true
        } catch {
            table.withLock { table in
                if case .pending(token) = table[key] { table[key] = nil }
            }
            logger.warning("shim did not answer; cleaning up", metadata: metadata.merging(["error": "\(error)"]) { $1 })
            task?.client.close()
            await cleanupAfterDeadShim(namespace: namespace, id: id, bundle: bundle, binary: binary, log: task?.log)
            return false
        }
    }
}

/// A deleted task's teardown, running on a blocking thread. Whoever needs it done (a new task of
/// the same id, a daemon on its way out) waits without holding a thread.
private final class Teardown: Sendable {
    private struct State {
        var finished = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())

    func finish() {
        let waiters = state.withLock { state in
            state.finished = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    func wait() async {
        await withCheckedContinuation { continuation in
            let finished = state.withLock { state in
                if !state.finished { state.waiters.append(continuation) }
                return state.finished
            }
            if finished { continuation.resume() }
        }
    }
}
