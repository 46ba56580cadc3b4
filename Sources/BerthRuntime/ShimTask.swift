import BerthAPI
import BerthCore
import BerthTTRPC
import Synchronization
import SwiftProtobuf

/// One task and the shim that serves it: typed `containerd.task.v2.Task` calls over the shim's
/// ttrpc connection.
///
/// Calls are `async` and suspend without holding a thread, so a `Wait` that lasts for hours
/// costs nothing but its continuation.
public final class ShimTask: Sendable {
    public static let service = "containerd.task.v2.Task"

    public let namespace: Namespace
    public let id: String
    /// The runtime name the task was created with (or recovered under).
    public let runtime: String
    /// The shim binary that serves the task.
    public let binary: String
    /// The shim's ttrpc address.
    public let address: String
    let bundle: Bundle
    let client: TTRPCClient
    let log: ShimLog?
    /// Tells this incarnation apart from a later task with the same id.
    let token: UInt64
    private let connectedPID = Atomic<UInt32>(0)
    /// The shim's PID, from `Connect` (0 when the shim does not say).
    public var shimPID: UInt32 { connectedPID.load(ordering: .relaxed) }

    public var bundlePath: String { bundle.path }

    init(namespace: Namespace, id: String, runtime: String, binary: String, address: String, bundle: Bundle,
         client: TTRPCClient, log: ShimLog?, token: UInt64) {
        self.namespace = namespace
        self.id = id
        self.runtime = runtime
        self.binary = binary
        self.address = address
        self.bundle = bundle
        self.client = client
        self.log = log
        self.token = token
    }

    /// Calls `method` with `request` and decodes the reply.
    ///
    /// - Throws: the shim's status as a `BerthError` of the same code (containerd's
    ///   `errdefs.FromGRPC`); `unavailable` when the shim is gone; `cancelled` when the
    ///   calling task is cancelled.
    public func call<Response: SwiftProtobuf.Message>(
        _ method: String, _ request: some SwiftProtobuf.Message, timeout: Duration? = nil,
        as _: Response.Type = Response.self
    ) async throws(BerthError) -> Response {
        let payload = try encode(method, request)
        let reply: [UInt8]
        do {
            reply = try await client.call(service: Self.service, method: method, payload: payload,
                                          metadata: [TTRPCMetadataKey.namespace: [namespace.name]], timeout: timeout)
        } catch {
            throw Self.mapError(error, task: id, method: method)
        }
        return try decode(method, reply)
    }

    /// ``call(_:_:timeout:as:)`` that blocks the calling thread until the reply (or the timeout),
    /// for work already on a blocking thread; the deadline costs no timer then.
    func callSynchronously<Response: SwiftProtobuf.Message>(
        _ method: String, _ request: some SwiftProtobuf.Message, timeout: Duration? = nil,
        as _: Response.Type = Response.self
    ) throws(BerthError) -> Response {
        let payload = try encode(method, request)
        let reply: [UInt8]
        do {
            reply = try client.call(service: Self.service, method: method, payload: payload,
                                    metadata: [TTRPCMetadataKey.namespace: [namespace.name]], timeout: timeout)
        } catch {
            throw Self.mapError(error, task: id, method: method)
        }
        return try decode(method, reply)
    }

    /// Calls a method whose reply is `google.protobuf.Empty`.
    public func callEmpty(_ method: String, _ request: some SwiftProtobuf.Message, timeout: Duration? = nil) async throws(BerthError) {
        let _: Google_Protobuf_Empty = try await call(method, request, timeout: timeout)
    }

    private func encode(_ method: String, _ request: some SwiftProtobuf.Message) throws(BerthError) -> [UInt8] {
        do { return try request.serializedBytes() } catch {
            throw .internal("task \(id): encode \(method) request", underlying: SendableErrorBox(error))
        }
    }

    private func decode<Response: SwiftProtobuf.Message>(_ method: String, _ reply: [UInt8]) throws(BerthError) -> Response {
        do { return try Response(serializedBytes: reply) } catch {
            throw .internal("task \(id): decode \(method) reply", underlying: SendableErrorBox(error))
        }
    }

    static func mapError(_ error: TTRPCError, task id: String, method: String) -> BerthError {
        switch error {
        case .closed:
            return .unavailable("task \(id): \(method): shim connection closed (ttrpc: closed)")
        case .status(let status):
            var message = status.message
            // errdefs.FromGRPC: the trailing ": <class>" the shim added goes; our code says it.
            for suffix in [": not found", ": already exists", ": failed precondition", ": invalid argument",
                           ": not implemented", ": unavailable", ": unknown"] where message.hasSuffix(suffix) {
                message.removeLast(suffix.count)
                break
            }
            // An unclassified error (a failing runc, say) reads `<message>: unknown` on its way
            // on, as errdefs.FromGRPC words it in containerd.
            if status.code == .unknown { message += ": unknown" }
            return BerthError(status.code.berthCode, message)
        }
    }

    // MARK: The Task API

    public func state(execID: String = "") async throws(BerthError) -> Containerd_Task_V2_StateResponse {
        var request = Containerd_Task_V2_StateRequest()
        request.id = id
        request.execID = execID
        return try await call("State", request)
    }

    public func start(execID: String = "") async throws(BerthError) -> UInt32 {
        var request = Containerd_Task_V2_StartRequest()
        request.id = id
        request.execID = execID
        let response: Containerd_Task_V2_StartResponse = try await call("Start", request)
        return response.pid
    }

    public func deleteProcess(execID: String) async throws(BerthError) -> Containerd_Task_V2_DeleteResponse {
        var request = Containerd_Task_V2_DeleteRequest()
        request.id = id
        request.execID = execID
        return try await call("Delete", request)
    }

    public func kill(execID: String = "", signal: UInt32, all: Bool) async throws(BerthError) {
        var request = Containerd_Task_V2_KillRequest()
        request.id = id
        request.execID = execID
        request.signal = signal
        request.all = all
        try await callEmpty("Kill", request)
    }

    public func exec(_ request: Containerd_Task_V2_ExecProcessRequest) async throws(BerthError) {
        var request = request
        request.id = id
        try await callEmpty("Exec", request)
    }

    public func resizePty(execID: String, width: UInt32, height: UInt32) async throws(BerthError) {
        var request = Containerd_Task_V2_ResizePtyRequest()
        request.id = id
        request.execID = execID
        request.width = width
        request.height = height
        try await callEmpty("ResizePty", request)
    }

    public func closeIO(execID: String, stdin: Bool) async throws(BerthError) {
        var request = Containerd_Task_V2_CloseIORequest()
        request.id = id
        request.execID = execID
        request.stdin = stdin
        try await callEmpty("CloseIO", request)
    }

    public func pause() async throws(BerthError) {
        var request = Containerd_Task_V2_PauseRequest()
        request.id = id
        try await callEmpty("Pause", request)
    }

    public func resume() async throws(BerthError) {
        var request = Containerd_Task_V2_ResumeRequest()
        request.id = id
        try await callEmpty("Resume", request)
    }

    public func pids() async throws(BerthError) -> [Containerd_V1_Types_ProcessInfo] {
        var request = Containerd_Task_V2_PidsRequest()
        request.id = id
        let response: Containerd_Task_V2_PidsResponse = try await call("Pids", request)
        return response.processes
    }

    public func update(resources: Google_Protobuf_Any?, annotations: [String: String]) async throws(BerthError) {
        var request = Containerd_Task_V2_UpdateTaskRequest()
        request.id = id
        if let resources { request.resources = resources }
        request.annotations = annotations
        try await callEmpty("Update", request)
    }

    public func stats() async throws(BerthError) -> Google_Protobuf_Any {
        var request = Containerd_Task_V2_StatsRequest()
        request.id = id
        let response: Containerd_Task_V2_StatsResponse = try await call("Stats", request)
        return response.stats
    }

    /// Waits until the process exits; suspends for as long as that takes.
    public func wait(execID: String = "") async throws(BerthError) -> Containerd_Task_V2_WaitResponse {
        var request = Containerd_Task_V2_WaitRequest()
        request.id = id
        request.execID = execID
        return try await call("Wait", request)
    }

    func connect(timeout: Duration) async throws(BerthError) -> Containerd_Task_V2_ConnectResponse {
        var request = Containerd_Task_V2_ConnectRequest()
        request.id = id
        let response: Containerd_Task_V2_ConnectResponse = try await call("Connect", request, timeout: timeout)
        connectedPID.store(response.shimPid, ordering: .relaxed)
        return response
    }
}
