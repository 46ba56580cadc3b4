import BerthCore
import BerthSystem
import BerthTTRPC
import Glibc

/// One process the shim supervises: a container's init (empty `execID`) or an exec.
/// Every mutable field is guarded by the service's table lock.
final class ManagedProcess: @unchecked Sendable {
    let containerID: String
    let execID: String
    let stdin: String, stdout: String, stderr: String
    let terminal: Bool
    /// The exec's OCI `Process` JSON.
    let processSpec: [UInt8]
    var pid: Int32 = 0
    var lifecycle = TaskLifecycle.created
    var io: ProcessIO?
    /// A Start is between invoking the runtime and publishing its event: an exit that arrives
    /// now waits in `deferredExit`, so `/tasks/exit` never overtakes `/tasks/start`.
    var starting = false
    var deferredExit: ExitStatus?

    init(containerID: String, execID: String, stdin: String, stdout: String, stderr: String, terminal: Bool,
         processSpec: [UInt8] = []) {
        self.containerID = containerID
        self.execID = execID
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.terminal = terminal
        self.processSpec = processSpec
    }

    /// The id events carry: the exec id, or the container id for init.
    var eventID: String { execID.isEmpty ? containerID : execID }
}

/// A container: its bundle, runtime, init process and execs (guarded by the table lock).
final class ManagedContainer: @unchecked Sendable {
    let id: String
    let bundle: String
    let driver: RuntimeDriver
    let spec: BundleSpec
    let rootfsMounted: Bool
    let initProcess: ManagedProcess
    var execs: [String: ManagedProcess] = [:]

    init(id: String, bundle: String, driver: RuntimeDriver, spec: BundleSpec, rootfsMounted: Bool, initProcess: ManagedProcess) {
        self.id = id
        self.bundle = bundle
        self.driver = driver
        self.spec = spec
        self.rootfsMounted = rootfsMounted
        self.initProcess = initProcess
    }
}

/// The `containerd.task.v2.Task` service: runs containers with runc/crun and reports their
/// lifecycle as containerd's runc v2 shim does (reference sheet §5). Errors carry containerd's
/// codes: NotFound "container not created" for an unknown id, FailedPrecondition for a
/// transition the process's state forbids, Unimplemented for what the shim does not do.
public final class TaskService: Sendable {
    public static let serviceName = "containerd.task.v2.Task"

    private struct Table {
        var containers: [String: ManagedContainer] = [:]
        var creating: Set<String> = []
        var byPID: [Int32: ManagedProcess] = [:]
        /// Exits of pids not (yet) known, e.g. an exec that ended before `runc exec` returned.
        var earlyExits: [Int32: ExitStatus] = [:]
        var shutdownRequested = false
        /// Deleted containers whose `runtime delete` still runs (see ``delete(_:)``).
        var retiring = 0
    }

    public let namespace: String
    public let publisher: EventPublisher
    private let table = ConditionLock(Table())
    private let exitRouter = ExitRouter()
    /// The single reaper of this process; see ``Reaper``.
    public let reaper: Reaper
    /// Publishes `/tasks/oom` for the containers' memory cgroups, from Create to Delete.
    private let oomWatcher: OOMWatcher

    /// Logs each call to stderr (the daemon's shim log) when set.
    public let debug: Bool

    public init(namespace: String, publisher: EventPublisher, debug: Bool = false) {
        self.namespace = namespace
        self.debug = debug
        self.publisher = publisher
        oomWatcher = OOMWatcher { [publisher] id in publisher.publish(.oom(containerID: id)) }
        let router = exitRouter
        reaper = Reaper { pid, status in router.route(pid, status) }
        router.service.update { $0 = WeakService(self) }
    }

    /// Registers every Task method on `server`.
    public func register(on server: TTRPCServer) {
        handle(server, "Create", CreateTaskRequest.self) { try self.create($0) }
        handle(server, "Start", ProcessRequest.self) { try self.start($0) }
        handle(server, "Delete", ProcessRequest.self) { try self.delete($0) }
        handle(server, "State", ProcessRequest.self) { try self.state($0) }
        handle(server, "Pids", IDRequest.self) { try self.pids($0) }
        handle(server, "Pause", IDRequest.self) { try self.pause($0) }
        handle(server, "Resume", IDRequest.self) { try self.resume($0) }
        handle(server, "Checkpoint", CheckpointTaskRequest.self) { _ in
            throw BerthError.unimplemented("checkpoint: berth-shim does not support checkpoint/restore yet")
        }
        handle(server, "Kill", KillRequest.self) { try self.kill($0) }
        handle(server, "Exec", ExecProcessRequest.self) { try self.exec($0) }
        handle(server, "ResizePty", ResizePtyRequest.self) { try self.resizePty($0) }
        handle(server, "CloseIO", CloseIORequest.self) { try self.closeIO($0) }
        handle(server, "Update", UpdateTaskRequest.self) { try self.update($0) }
        handle(server, "Wait", ProcessRequest.self) { try self.wait($0) }
        handle(server, "Stats", IDRequest.self) { try self.stats($0) }
        handle(server, "Connect", IDRequest.self) { self.connect($0) }
        handle(server, "Shutdown", ShutdownRequest.self) { self.shutdown($0) }
    }

    private func handle<Request: ProtoMessage>(
        _ server: TTRPCServer, _ method: String, _ type: Request.Type,
        _ body: @escaping @Sendable (Request) throws -> any ProtoMessage
    ) {
        let debug = self.debug
        server.register(service: Self.serviceName, method: method) { _, payload in
            let request = try Request(decoding: payload)
            if debug { log("berth-shim: \(method) \(request)") }
            do {
                return try body(request).encoded()
            } catch let error as BerthError where error.code == .internal {
                // containerd's shim sends every error errdefs does not classify (a failing runc
                // above all) as Unknown; the daemon and ctr expect that code.
                if debug { log("berth-shim: \(method) failed: \(error)") }
                throw TTRPCError(.unknown, error.description)
            } catch {
                if debug { log("berth-shim: \(method) failed: \(error)") }
                throw error
            }
        }
    }

    /// Blocks until a `Shutdown` found no containers left.
    public func waitForShutdown() {
        _ = table.wait { $0.shutdownRequested ? true : nil }
    }

    // MARK: - Lookup

    private func lookupContainer(_ id: String, in table: Table) throws(BerthError) -> ManagedContainer {
        guard let container = table.containers[id] else { throw .notFound("container not created: not found") }
        return container
    }

    private func lookupProcess(_ id: String, _ execID: String, in table: Table) throws(BerthError) -> ManagedProcess {
        let container = try lookupContainer(id, in: table)
        if execID.isEmpty { return container.initProcess }
        guard let process = container.execs[execID] else {
            throw .notFound("process \(execID) does not exist: not found")
        }
        return process
    }

    // MARK: - Create

    func create(_ request: CreateTaskRequest) throws(BerthError) -> PidResponse {
        guard !request.id.isEmpty else { throw .invalidArgument("create: container id must not be empty") }
        guard request.checkpoint.isEmpty else {
            throw .unimplemented("container \(request.id): restore from checkpoint is not supported by berth-shim")
        }
        try table.update { (table: inout Table) throws(BerthError) in
            guard table.containers[request.id] == nil, !table.creating.contains(request.id) else {
                throw .alreadyExists("container \(request.id): already exists")
            }
            table.creating.insert(request.id)
        }
        defer { table.update { _ = $0.creating.remove(request.id) } }

        let bundle = request.bundle.isEmpty ? currentDirectory() : request.bundle
        let options = try RuncOptions(any: request.options)
        let spec = try BundleSpec.load(bundle: bundle)
        let driver = RuntimeDriver(options: options, namespace: namespace, bundle: bundle, reaper: reaper)
        let rootfs = bundle + "/rootfs"
        var mounted = false
        var io: ProcessIO?
        var created = false
        do throws(BerthError) {
            if !request.rootfs.isEmpty {
                _ = mkdir(rootfs, 0o711)
                try Mounter.mount(request.rootfs.map { Mount(type: $0.type, source: $0.source, options: $0.options) }, at: rootfs)
                mounted = true
            }
            try writeFile(bundle + "/options.json", Array(options.json.utf8))
            try writeFile(bundle + "/runtime", Array(options.binaryName.utf8))
            let processIO = try ProcessIO(stdin: request.stdin, stdout: request.stdout, stderr: request.stderr,
                                          terminal: request.terminal, id: request.id, namespace: namespace)
            io = processIO
            let pidFile = bundle + "/init.pid"
            do throws(BerthError) {
                try driver.create(id: request.id, pidFile: pidFile, consoleSocket: processIO.consoleSocketPath,
                                  noPivotRoot: options.noPivotRoot, noNewKeyring: options.noNewKeyring,
                                  stdio: processIO.runtimeStdio)
            } catch {
                try? processIO.runtimeStarted(succeeded: false)
                throw error
            }
            created = true
            try processIO.runtimeStarted(succeeded: true)
            guard let text = readText(pidFile), let pid = Int32(text.filter { $0.isNumber }) else {
                throw BerthError.internal("container \(request.id): runtime wrote no pid to \(pidFile)")
            }
            let initProcess = ManagedProcess(containerID: request.id, execID: "", stdin: request.stdin,
                                             stdout: request.stdout, stderr: request.stderr, terminal: request.terminal)
            initProcess.pid = pid
            initProcess.io = processIO
            let container = ManagedContainer(id: request.id, bundle: bundle, driver: driver, spec: spec,
                                             rootfsMounted: mounted, initProcess: initProcess)
            table.update { table in
                table.containers[request.id] = container
                table.byPID[pid] = initProcess
                publisher.publish(.create(
                    containerID: request.id, bundle: bundle, rootfs: request.rootfs,
                    io: .init(stdin: request.stdin, stdout: request.stdout, stderr: request.stderr, terminal: request.terminal),
                    checkpoint: request.checkpoint, pid: UInt32(pid)))
                if let early = table.earlyExits.removeValue(forKey: pid) {
                    applyExit(initProcess, early, container: container)
                }
            }
            watchOOM(container: request.id, pid: pid)
            return PidResponse(pid: UInt32(pid))
        } catch {
            io?.close()
            if created { try? driver.delete(id: request.id, force: true) }
            if mounted { try? Mounter.unmountAll(rootfs) }
            throw error
        }
    }

    /// Watches the new container's memory cgroup (it exists once the runtime created the
    /// container, before its process runs). A cgroup that cannot be watched is logged, as
    /// containerd's shim does, and the container runs without OOM events.
    private func watchOOM(container id: String, pid: Int32) {
        guard let target = OOMWatcher.target(pid: pid) else {
            log("berth-shim: container \(id): no memory cgroup found for pid \(pid); no OOM events")
            return
        }
        do {
            try oomWatcher.add(containerID: id, target: target)
        } catch {
            log("berth-shim: container \(id): \(error.message); no OOM events")
        }
    }

    // MARK: - Start

    func start(_ request: ProcessRequest) throws(BerthError) -> PidResponse {
        let (container, process) = try table.update { (table: inout Table) throws(BerthError) -> (ManagedContainer, ManagedProcess) in
            let container = try lookupContainer(request.id, in: table)
            let process = try lookupProcess(request.id, request.execID, in: table)
            var next = process.lifecycle
            _ = try next.start()
            process.starting = true
            return (container, process)
        }
        do throws(BerthError) {
            if process.execID.isEmpty {
                try container.driver.start(id: container.id, initPID: process.pid)
            } else {
                try startExec(container, process)
            }
        } catch {
            table.update { _ in
                process.starting = false
                if let exit = process.deferredExit { applyExit(process, exit, container: container) }
            }
            throw error
        }
        return table.update { table in
            process.starting = false
            if case .created = process.lifecycle { process.lifecycle = .running }
            if process.execID.isEmpty {
                publisher.publish(.start(containerID: container.id, pid: UInt32(process.pid)))
            } else {
                publisher.publish(.execStarted(containerID: container.id, execID: process.execID, pid: UInt32(process.pid)))
            }
            if let exit = process.deferredExit ?? table.earlyExits.removeValue(forKey: process.pid) {
                process.deferredExit = nil
                applyExit(process, exit, container: container)
            }
            return PidResponse(pid: UInt32(process.pid))
        }
    }

    private func startExec(_ container: ManagedContainer, _ process: ManagedProcess) throws(BerthError) {
        let io = try ProcessIO(stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, terminal: process.terminal,
                               id: process.execID, namespace: namespace)
        let processFile = container.bundle + "/exec-\(process.execID).json"
        let pidFile = container.bundle + "/exec-\(process.execID).pid"
        do throws(BerthError) {
            try writeFile(processFile, process.processSpec, mode: 0o600)
            defer { unlink(processFile) }
            do throws(BerthError) {
                try container.driver.exec(id: container.id, processFile: processFile, pidFile: pidFile,
                                          consoleSocket: io.consoleSocketPath, stdio: io.runtimeStdio)
            } catch {
                try? io.runtimeStarted(succeeded: false)
                throw error
            }
            try io.runtimeStarted(succeeded: true)
            guard let text = readText(pidFile), let pid = Int32(text.filter { $0.isNumber }) else {
                throw BerthError.internal("exec \(process.execID) in \(container.id): runtime wrote no pid")
            }
            unlink(pidFile)
            table.update { table in
                process.pid = pid
                process.io = io
                table.byPID[pid] = process
                if let early = table.earlyExits.removeValue(forKey: pid) { process.deferredExit = early }
            }
        } catch {
            io.close()
            throw error
        }
    }

    // MARK: - Exits

    /// An exit the reaper saw (on the reaper thread: nothing here may wait for a child).
    fileprivate func processExited(_ pid: Int32, _ status: ExitStatus) {
        table.update { table in
            guard let process = table.byPID[pid] else {
                if table.earlyExits.count > 1024 { table.earlyExits.removeAll() }
                table.earlyExits[pid] = status
                return
            }
            if process.starting {
                process.deferredExit = status
                return
            }
            if let container = table.containers[process.containerID] {
                applyExit(process, status, container: container)
            }
        }
    }

    /// Records an exit and queues its event; call with the table locked.
    private func applyExit(_ process: ManagedProcess, _ status: ExitStatus, container: ManagedContainer) {
        for action in process.lifecycle.exited(status) {
            if case .publishExit(let exit) = action {
                publisher.publish(.exit(containerID: process.containerID, id: process.eventID, pid: UInt32(process.pid),
                                        exitStatus: exit.code, exitedAt: exit.exitedAt))
            }
        }
        if process.execID.isEmpty, container.spec.killAllOnExit {
            // Runs the runtime, so not on the reaper thread.
            let driver = container.driver
            let id = container.id
            try? startThread(name: "kill-all") { try? driver.kill(id: id, signal: UInt32(SIGKILL), all: true) }
        }
    }

    // MARK: - Delete

    func delete(_ request: ProcessRequest) throws(BerthError) -> DeleteResponse {
        let (container, process) = try table.update { (table: inout Table) throws(BerthError) -> (ManagedContainer, ManagedProcess) in
            let container = try lookupContainer(request.id, in: table)
            let process = try lookupProcess(request.id, request.execID, in: table)
            let before = process.lifecycle
            _ = try process.lifecycle.delete()
            if let exit = before.exit { process.lifecycle = .stopped(exit) }
            return (container, process)
        }
        let exit = process.lifecycle.exit ?? ExitStatus(code: 137, exitedAt: .now())
        process.io?.waitForOutput(timeout: .seconds(5))
        if process.execID.isEmpty {
            oomWatcher.remove(containerID: container.id)
            process.io?.close()
            // The container has stopped: the answer does not wait for `runtime delete` (a runc
            // process, most of a Delete's time) or the rootfs' unmount (which syncs the upper
            // file system), done next in that order on a thread of their own. Shutdown waits for
            // them, so a new task of this id (which berthd starts only after Shutdown) and the
            // bundle's removal come after.
            table.update { table in
                process.lifecycle = .deleted
                table.containers[container.id] = nil
                table.byPID[process.pid] = nil
                for exec in container.execs.values { table.byPID[exec.pid] = nil }
                table.retiring += 1
                publisher.publish(.delete(containerID: container.id, pid: UInt32(process.pid), exitStatus: exit.code,
                                          exitedAt: exit.exitedAt, id: ""))
            }
            retire(container)
        } else {
            process.io?.close()
            table.update { table in
                process.lifecycle = .deleted
                container.execs[process.execID] = nil
                if process.pid != 0 { table.byPID[process.pid] = nil }
            }
        }
        return DeleteResponse(pid: UInt32(process.pid), exitStatus: exit.code, exitedAt: exit.exitedAt)
    }

    /// `runtime delete --force` (which also ends what is left in the container's cgroup) and the
    /// rootfs' unmount for a deleted container, off the caller's thread (on the calling thread
    /// when no thread can be started).
    private func retire(_ container: ManagedContainer) {
        let work: @Sendable () -> Void = { [self] in
            do throws(BerthError) {
                try container.driver.delete(id: container.id, force: true)
            } catch {
                log("berth-shim: container \(container.id): \(error.message)")
            }
            if container.rootfsMounted {
                do throws(BerthError) {
                    try Mounter.unmountAll(container.bundle + "/rootfs")
                } catch {
                    log("berth-shim: container \(container.id): \(error.message)")
                }
            }
            table.update(waking: .all) { $0.retiring -= 1 }
        }
        do { try startThread(name: "runtime-delete", work) } catch { work() }
    }

    // MARK: - Queries

    func state(_ request: ProcessRequest) throws(BerthError) -> StateResponse {
        try table.update { (table: inout Table) throws(BerthError) -> StateResponse in
            let container = try lookupContainer(request.id, in: table)
            let process = try lookupProcess(request.id, request.execID, in: table)
            var response = StateResponse()
            response.id = process.eventID
            response.bundle = container.bundle
            response.pid = UInt32(process.pid)
            response.status = process.lifecycle.status
            response.stdin = process.stdin
            response.stdout = process.stdout
            response.stderr = process.stderr
            response.terminal = process.terminal
            response.execID = process.execID
            if let exit = process.lifecycle.exit {
                response.exitStatus = exit.code
                response.exitedAt = exit.exitedAt
            } else {
                response.exitedAt = .goZero
            }
            return response
        }
    }

    func pids(_ request: IDRequest) throws(BerthError) -> PidsResponse {
        let (driver, execs) = try table.update { (table: inout Table) throws(BerthError) -> (RuntimeDriver, [Int32: String]) in
            let container = try lookupContainer(request.id, in: table)
            var execs: [Int32: String] = [:]
            for exec in container.execs.values where exec.pid != 0 { execs[exec.pid] = exec.execID }
            return (container.driver, execs)
        }
        var response = PidsResponse()
        for pid in try driver.pids(id: request.id) {
            let info = execs[pid].map { ProtoAny(typeURL: ProcessDetails.typeURL, message: ProcessDetails(execID: $0)) }
            response.processes.append(ProcessInfo(pid: UInt32(pid), info: info))
        }
        return response
    }

    func wait(_ request: ProcessRequest) throws(BerthError) -> WaitResponse {
        let process = try table.update { (table: inout Table) throws(BerthError) -> ManagedProcess in
            try self.lookupProcess(request.id, request.execID, in: table)
        }
        let exit = table.wait { _ -> ExitStatus? in
            if let exit = process.lifecycle.exit { return exit }
            if case .deleted = process.lifecycle { return ExitStatus(code: 137, exitedAt: .now()) }
            return nil
        }!
        return WaitResponse(exitStatus: exit.code, exitedAt: exit.exitedAt)
    }

    func stats(_ request: IDRequest) throws(BerthError) -> StatsResponse {
        let container = try table.update { (table: inout Table) throws(BerthError) -> ManagedContainer in
            try self.lookupContainer(request.id, in: table)
        }
        return StatsResponse(stats: try CgroupStats.collect(cgroupsPath: container.spec.cgroupsPath))
    }

    func connect(_ request: IDRequest) -> ConnectResponse {
        var response = ConnectResponse()
        response.shimPID = UInt32(getpid())
        table.update { table in
            if let container = table.containers[request.id] { response.taskPID = UInt32(container.initProcess.pid) }
        }
        return response
    }

    /// Once the deleted containers' runtime deletes are done (the bundle, which holds their
    /// log, must outlive them), ends the shim if no container is left.
    func shutdown(_ request: ShutdownRequest) -> ProtoEmpty {
        table.wait(for: { $0.retiring == 0 })
        let left = table.update { table -> [String] in
            if table.containers.isEmpty && table.creating.isEmpty { table.shutdownRequested = true }
            return Array(table.containers.keys) + Array(table.creating)
        }
        if !left.isEmpty { log("berth-shim: shutdown: staying for \(left.joined(separator: " "))") }
        return ProtoEmpty()
    }

    // MARK: - Control

    func pause(_ request: IDRequest) throws(BerthError) -> ProtoEmpty {
        try transition(request.id, verb: { (lifecycle: inout TaskLifecycle) throws(BerthError) in _ = try lifecycle.pause() },
                       run: { (driver: RuntimeDriver) throws(BerthError) in try driver.pause(id: request.id) },
                       event: .paused(containerID: request.id))
    }

    func resume(_ request: IDRequest) throws(BerthError) -> ProtoEmpty {
        try transition(request.id, verb: { (lifecycle: inout TaskLifecycle) throws(BerthError) in _ = try lifecycle.resume() },
                       run: { (driver: RuntimeDriver) throws(BerthError) in try driver.resume(id: request.id) },
                       event: .resumed(containerID: request.id))
    }

    /// Checks a transition of init under the lock, runs the runtime outside it, and commits the
    /// new state only if nothing (an exit) changed the process meanwhile.
    private func transition(_ id: String, verb: (inout TaskLifecycle) throws(BerthError) -> Void,
                            run: (RuntimeDriver) throws(BerthError) -> Void, event: TaskEvent) throws(BerthError) -> ProtoEmpty {
        let (container, before, after) = try table.update {
            (table: inout Table) throws(BerthError) -> (ManagedContainer, TaskLifecycle, TaskLifecycle) in
            let container = try lookupContainer(id, in: table)
            var next = container.initProcess.lifecycle
            try verb(&next)
            return (container, container.initProcess.lifecycle, next)
        }
        try run(container.driver)
        table.update { _ in
            if container.initProcess.lifecycle == before {
                container.initProcess.lifecycle = after
                publisher.publish(event)
            }
        }
        return ProtoEmpty()
    }

    func kill(_ request: KillRequest) throws(BerthError) -> ProtoEmpty {
        let (container, process) = try table.update { (table: inout Table) throws(BerthError) -> (ManagedContainer, ManagedProcess) in
            let container = try lookupContainer(request.id, in: table)
            let process = try lookupProcess(request.id, request.execID, in: table)
            try process.lifecycle.kill()
            return (container, process)
        }
        if process.execID.isEmpty {
            try container.driver.kill(id: container.id, signal: request.signal, all: request.all)
        } else {
            guard process.pid > 0 else { throw .failedPrecondition("process \(process.execID) has not started") }
            guard Glibc.kill(process.pid, Int32(request.signal)) == 0 else {
                if errno == ESRCH { throw .notFound("process already finished: not found") }
                throw errnoError("kill exec \(process.execID)")
            }
        }
        return ProtoEmpty()
    }

    func exec(_ request: ExecProcessRequest) throws(BerthError) -> ProtoEmpty {
        guard !request.execID.isEmpty else { throw .invalidArgument("exec: exec id must not be empty") }
        guard let spec = request.spec, !spec.value.isEmpty else { throw .invalidArgument("exec \(request.execID): no process spec") }
        try table.update { (table: inout Table) throws(BerthError) in
            let container = try lookupContainer(request.id, in: table)
            guard container.execs[request.execID] == nil else {
                throw .alreadyExists("id \(request.execID): already exists")
            }
            guard !container.initProcess.lifecycle.hasExited else {
                throw .failedPrecondition("container \(request.id): cannot exec in a stopped container")
            }
            container.execs[request.execID] = ManagedProcess(
                containerID: request.id, execID: request.execID, stdin: request.stdin, stdout: request.stdout,
                stderr: request.stderr, terminal: request.terminal, processSpec: spec.value)
            publisher.publish(.execAdded(containerID: request.id, execID: request.execID))
        }
        return ProtoEmpty()
    }

    func resizePty(_ request: ResizePtyRequest) throws(BerthError) -> ProtoEmpty {
        let io = try table.update { (table: inout Table) throws(BerthError) -> ProcessIO? in
            try lookupProcess(request.id, request.execID, in: table).io
        }
        // A process without a terminal (or not started yet) has nothing to resize: a no-op, as
        // in containerd's shim.
        try io?.resize(width: request.width, height: request.height)
        return ProtoEmpty()
    }

    func closeIO(_ request: CloseIORequest) throws(BerthError) -> ProtoEmpty {
        let io = try table.update { (table: inout Table) throws(BerthError) -> ProcessIO? in
            try lookupProcess(request.id, request.execID, in: table).io
        }
        if request.stdin { io?.closeStdin() }
        return ProtoEmpty()
    }

    func update(_ request: UpdateTaskRequest) throws(BerthError) -> ProtoEmpty {
        let container = try table.update { (table: inout Table) throws(BerthError) -> ManagedContainer in
            try self.lookupContainer(request.id, in: table)
        }
        guard let resources = request.resources, !resources.value.isEmpty else {
            throw .invalidArgument("update \(request.id): no resources")
        }
        let file = container.bundle + "/update-resources.json"
        try writeFile(file, resources.value, mode: 0o600)
        defer { unlink(file) }
        try container.driver.update(id: request.id, resourcesFile: file)
        return ProtoEmpty()
    }
}

/// Hands reaper exits to the service without a reference cycle.
private final class ExitRouter: Sendable {
    let service = ConditionLock<WeakService?>(nil)
    func route(_ pid: Int32, _ status: ExitStatus) {
        service.update { $0?.service }?.processExited(pid, status)
    }
}

private struct WeakService: @unchecked Sendable {
    weak var service: TaskService?
    init(_ service: TaskService) { self.service = service }
}

extension ProtoTimestamp {
    /// Go's zero `time.Time` (year 1), which containerd 1.6 sends for "not exited".
    public static let goZero = ProtoTimestamp(seconds: -62_135_596_800, nanos: 0)
}

extension RuncOptions {
    /// `options.json` as containerd's runc shim writes it (Go field tags).
    var json: String {
        var fields: [String] = []
        if noPivotRoot { fields.append("\"no_pivot_root\":true") }
        if noNewKeyring { fields.append("\"no_new_keyring\":true") }
        if !shimCgroup.isEmpty { fields.append("\"shim_cgroup\":\(JSONValue.quote(shimCgroup))") }
        if ioUID != 0 { fields.append("\"io_uid\":\(ioUID)") }
        if ioGID != 0 { fields.append("\"io_gid\":\(ioGID)") }
        if !binaryName.isEmpty { fields.append("\"binary_name\":\(JSONValue.quote(binaryName))") }
        if !root.isEmpty { fields.append("\"root\":\(JSONValue.quote(root))") }
        if systemdCgroup { fields.append("\"systemd_cgroup\":true") }
        return "{" + fields.joined(separator: ",") + "}"
    }

    /// Reads `options.json` back (for the `delete` action).
    init(json bytes: [UInt8]) throws(BerthError) {
        self.init()
        let value = try JSONValue(parsing: bytes)
        binaryName = value["binary_name"]?.stringValue ?? ""
        root = value["root"]?.stringValue ?? ""
        if case .bool(true) = value["systemd_cgroup"] { systemdCgroup = true }
    }
}

func currentDirectory() -> String {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    guard getcwd(&buffer, buffer.count) != nil else { return "." }
    return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
