import BerthAPI
import BerthCore
import BerthMetadata
import BerthRuntime
import GRPCCore
import Logging
import SwiftProtobuf

/// `containerd.services.tasks.v1.Tasks`: running containers through runtime v2 shims.
///
/// A thin adapter: the container record comes from the metadata store, the task lives in its
/// shim, and ``ShimManager`` owns the table of live tasks. Shim errors keep their gRPC code.
public struct TasksService: Containerd_Services_Tasks_V1_Tasks.SimpleServiceProtocol {
    let store: MetadataStore
    let shims: ShimManager
    let logger: Logger

    /// The runtime a container without one gets, as containerd's default.
    static let defaultRuntime = "io.containerd.runc.v2"

    public init(store: MetadataStore, shims: ShimManager, logger: Logger) {
        self.store = store
        self.shims = shims
        self.logger = logger
    }

    public func create(request: Containerd_Services_Tasks_V1_CreateTaskRequest, context: ServerContext) async throws -> Containerd_Services_Tasks_V1_CreateTaskResponse {
        try await handle(logger, "Tasks/Create") {
            let namespace = try RequestContext.currentNamespace()
            let container = try await store.container(namespace, id: request.containerID)
            guard !request.hasCheckpoint else {
                throw BerthError.unimplemented("task \(quoted(container.id)): restore from checkpoint is not supported")
            }
            guard let spec = container.spec, !spec.value.isEmpty else {
                throw BerthError.invalidArgument("container \(quoted(container.id)): spec must be set to create a task")
            }
            var rootfs = request.rootfs.map(Mount.init)
            if rootfs.isEmpty && !container.snapshotKey.isEmpty {
                rootfs = try await store.snapshotMounts(namespace, snapshotter: container.snapshotter, key: container.snapshotKey)
            }
            let runtime = !request.runtimePath.isEmpty ? request.runtimePath
                : !container.runtimeName.isEmpty ? container.runtimeName : Self.defaultRuntime
            let creation = TaskCreation(
                namespace: namespace, id: container.id, runtime: runtime, spec: spec.value,
                runtimeOptions: container.runtimeOptions, taskOptions: request.hasOptions ? TypedValue(request.options) : nil,
                rootfs: rootfs, stdin: request.stdin, stdout: request.stdout, stderr: request.stderr, terminal: request.terminal)
            let (_, pid) = try await shims.create(creation)
            var response = Containerd_Services_Tasks_V1_CreateTaskResponse()
            response.containerID = container.id
            response.pid = pid
            return response
        }
    }

    public func start(request: Containerd_Services_Tasks_V1_StartRequest, context: ServerContext) async throws -> Containerd_Services_Tasks_V1_StartResponse {
        try await handle(logger, "Tasks/Start") {
            let task = try shims.task(try RequestContext.currentNamespace(), id: request.containerID)
            var response = Containerd_Services_Tasks_V1_StartResponse()
            response.pid = try await task.start(execID: request.execID)
            return response
        }
    }

    public func delete(request: Containerd_Services_Tasks_V1_DeleteTaskRequest, context: ServerContext) async throws -> Containerd_Services_Tasks_V1_DeleteResponse {
        try await handle(logger, "Tasks/Delete") {
            let task = try shims.task(try RequestContext.currentNamespace(), id: request.containerID)
            let state = try await task.state()
            switch state.status {
            case .running, .paused, .pausing:
                throw BerthError.failedPrecondition(
                    "task \(quoted(task.id)) must be stopped before deletion: \(Self.statusName(state.status))")
            default:
                break
            }
            let deleted = try await shims.delete(task)
            return Self.deleteResponse(id: task.id, deleted)
        }
    }

    public func deleteProcess(request: Containerd_Services_Tasks_V1_DeleteProcessRequest, context: ServerContext) async throws -> Containerd_Services_Tasks_V1_DeleteResponse {
        try await handle(logger, "Tasks/DeleteProcess") {
            guard !request.execID.isEmpty else { throw BerthError.invalidArgument("exec id must be set to delete a process") }
            let task = try shims.task(try RequestContext.currentNamespace(), id: request.containerID)
            return Self.deleteResponse(id: request.execID, try await task.deleteProcess(execID: request.execID))
        }
    }

    public func get(request: Containerd_Services_Tasks_V1_GetRequest, context: ServerContext) async throws -> Containerd_Services_Tasks_V1_GetResponse {
        try await handle(logger, "Tasks/Get") {
            let task = try shims.task(try RequestContext.currentNamespace(), id: request.containerID)
            var response = Containerd_Services_Tasks_V1_GetResponse()
            response.process = Self.process(task: task, try await task.state(execID: request.execID))
            return response
        }
    }

    public func list(request: Containerd_Services_Tasks_V1_ListTasksRequest, context: ServerContext) async throws -> Containerd_Services_Tasks_V1_ListTasksResponse {
        try await handle(logger, "Tasks/List") {
            var response = Containerd_Services_Tasks_V1_ListTasksResponse()
            for task in shims.tasks(try RequestContext.currentNamespace()) {
                do {
                    response.tasks.append(Self.process(task: task, try await task.state()))
                } catch let error as BerthError where error.code == .notFound || error.code == .unavailable {
                    // Gone between listing and asking (deleted, or its shim died): not a task any more.
                    logger.debug("task vanished while listing", metadata: ["id": "\(task.id)", "error": "\(error)"])
                }
            }
            return response
        }
    }

    public func kill(request: Containerd_Services_Tasks_V1_KillRequest, context: ServerContext) async throws -> Google_Protobuf_Empty {
        try await handle(logger, "Tasks/Kill") {
            let task = try shims.task(try RequestContext.currentNamespace(), id: request.containerID)
            try await task.kill(execID: request.execID, signal: request.signal, all: request.all)
            return Google_Protobuf_Empty()
        }
    }

    public func exec(request: Containerd_Services_Tasks_V1_ExecProcessRequest, context: ServerContext) async throws -> Google_Protobuf_Empty {
        try await handle(logger, "Tasks/Exec") {
            guard !request.execID.isEmpty else { throw BerthError.invalidArgument("exec id must not be empty") }
            let task = try shims.task(try RequestContext.currentNamespace(), id: request.containerID)
            var exec = Containerd_Task_V2_ExecProcessRequest()
            exec.execID = request.execID
            exec.terminal = request.terminal
            exec.stdin = request.stdin
            exec.stdout = request.stdout
            exec.stderr = request.stderr
            if request.hasSpec { exec.spec = request.spec }
            try await task.exec(exec)
            return Google_Protobuf_Empty()
        }
    }

    public func resizePty(request: Containerd_Services_Tasks_V1_ResizePtyRequest, context: ServerContext) async throws -> Google_Protobuf_Empty {
        try await handle(logger, "Tasks/ResizePty") {
            let task = try shims.task(try RequestContext.currentNamespace(), id: request.containerID)
            try await task.resizePty(execID: request.execID, width: request.width, height: request.height)
            return Google_Protobuf_Empty()
        }
    }

    public func closeIO(request: Containerd_Services_Tasks_V1_CloseIORequest, context: ServerContext) async throws -> Google_Protobuf_Empty {
        try await handle(logger, "Tasks/CloseIO") {
            let task = try shims.task(try RequestContext.currentNamespace(), id: request.containerID)
            try await task.closeIO(execID: request.execID, stdin: request.stdin)
            return Google_Protobuf_Empty()
        }
    }

    public func pause(request: Containerd_Services_Tasks_V1_PauseTaskRequest, context: ServerContext) async throws -> Google_Protobuf_Empty {
        try await handle(logger, "Tasks/Pause") {
            try await shims.task(try RequestContext.currentNamespace(), id: request.containerID).pause()
            return Google_Protobuf_Empty()
        }
    }

    public func resume(request: Containerd_Services_Tasks_V1_ResumeTaskRequest, context: ServerContext) async throws -> Google_Protobuf_Empty {
        try await handle(logger, "Tasks/Resume") {
            try await shims.task(try RequestContext.currentNamespace(), id: request.containerID).resume()
            return Google_Protobuf_Empty()
        }
    }

    public func listPids(request: Containerd_Services_Tasks_V1_ListPidsRequest, context: ServerContext) async throws -> Containerd_Services_Tasks_V1_ListPidsResponse {
        try await handle(logger, "Tasks/ListPids") {
            let task = try shims.task(try RequestContext.currentNamespace(), id: request.containerID)
            var response = Containerd_Services_Tasks_V1_ListPidsResponse()
            response.processes = try await task.pids()
            return response
        }
    }

    public func checkpoint(request: Containerd_Services_Tasks_V1_CheckpointTaskRequest, context: ServerContext) async throws -> Containerd_Services_Tasks_V1_CheckpointTaskResponse {
        try await handle(logger, "Tasks/Checkpoint") {
            throw BerthError.unimplemented("task \(quoted(request.containerID)): checkpoint is not supported")
        }
    }

    public func update(request: Containerd_Services_Tasks_V1_UpdateTaskRequest, context: ServerContext) async throws -> Google_Protobuf_Empty {
        try await handle(logger, "Tasks/Update") {
            let task = try shims.task(try RequestContext.currentNamespace(), id: request.containerID)
            try await task.update(resources: request.hasResources ? request.resources : nil, annotations: request.annotations)
            return Google_Protobuf_Empty()
        }
    }

    public func metrics(request: Containerd_Services_Tasks_V1_MetricsRequest, context: ServerContext) async throws -> Containerd_Services_Tasks_V1_MetricsResponse {
        try await handle(logger, "Tasks/Metrics") {
            let namespace = try RequestContext.currentNamespace()
            let filter = try Filter(parsing: request.filters)
            var response = Containerd_Services_Tasks_V1_MetricsResponse()
            for task in shims.tasks(namespace) where filter.matches(TaskView(task: task)) {
                var metric = Containerd_Types_Metric()
                metric.timestamp = .init(Timestamp.now)
                metric.id = task.id
                metric.data = try await task.stats()
                response.metrics.append(metric)
            }
            return response
        }
    }

    public func wait(request: Containerd_Services_Tasks_V1_WaitRequest, context: ServerContext) async throws -> Containerd_Services_Tasks_V1_WaitResponse {
        try await handle(logger, "Tasks/Wait") {
            let task = try shims.task(try RequestContext.currentNamespace(), id: request.containerID)
            let exited = try await task.wait(execID: request.execID)
            var response = Containerd_Services_Tasks_V1_WaitResponse()
            response.exitStatus = exited.exitStatus
            if exited.hasExitedAt { response.exitedAt = exited.exitedAt }
            return response
        }
    }

    // MARK: Conversions

    static func process(task: ShimTask, _ state: Containerd_Task_V2_StateResponse) -> Containerd_V1_Types_Process {
        var process = Containerd_V1_Types_Process()
        process.containerID = task.id
        process.id = state.execID.isEmpty ? task.id : state.execID
        process.pid = state.pid
        process.status = state.status
        process.stdin = state.stdin
        process.stdout = state.stdout
        process.stderr = state.stderr
        process.terminal = state.terminal
        process.exitStatus = state.exitStatus
        if state.hasExitedAt { process.exitedAt = state.exitedAt }
        return process
    }

    static func deleteResponse(id: String, _ deleted: Containerd_Task_V2_DeleteResponse) -> Containerd_Services_Tasks_V1_DeleteResponse {
        var response = Containerd_Services_Tasks_V1_DeleteResponse()
        response.id = id
        response.pid = deleted.pid
        response.exitStatus = deleted.exitStatus
        if deleted.hasExitedAt { response.exitedAt = deleted.exitedAt }
        return response
    }

    static func statusName(_ status: Containerd_V1_Types_Status) -> String {
        switch status {
        case .created: "created"
        case .running: "running"
        case .stopped: "stopped"
        case .paused: "paused"
        case .pausing: "pausing"
        default: "unknown"
        }
    }
}

/// The fields a `Tasks/Metrics` filter can name: `id`, `namespace`, `runtime`.
struct TaskView: Filterable {
    let task: ShimTask
    func field(_ path: [String]) -> String? {
        switch path {
        case ["id"]: task.id
        case ["namespace"]: task.namespace.name
        case ["runtime"]: task.runtime.isEmpty ? nil : task.runtime
        default: nil
        }
    }
}
