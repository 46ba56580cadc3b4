import BerthCore
import BerthTTRPC

/// The `containerd.events.Task*` events a shim publishes, each with its topic and bare type URL.
public enum TaskEvent: Sendable, Hashable {
    /// `TaskIO` of `TaskCreate`.
    public struct IO: Sendable, Hashable {
        public var stdin = "", stdout = "", stderr = ""
        public var terminal = false
        public init(stdin: String = "", stdout: String = "", stderr: String = "", terminal: Bool = false) {
            self.stdin = stdin
            self.stdout = stdout
            self.stderr = stderr
            self.terminal = terminal
        }
    }

    case create(containerID: String, bundle: String, rootfs: [ProtoMount], io: IO, checkpoint: String, pid: UInt32)
    case start(containerID: String, pid: UInt32)
    case exit(containerID: String, id: String, pid: UInt32, exitStatus: UInt32, exitedAt: ProtoTimestamp)
    case delete(containerID: String, pid: UInt32, exitStatus: UInt32, exitedAt: ProtoTimestamp, id: String)
    case oom(containerID: String)
    case execAdded(containerID: String, execID: String)
    case execStarted(containerID: String, execID: String, pid: UInt32)
    case paused(containerID: String)
    case resumed(containerID: String)
    case checkpointed(containerID: String, checkpoint: String)

    /// The topic, e.g. `/tasks/exit`.
    public var topic: String {
        switch self {
        case .create: "/tasks/create"
        case .start: "/tasks/start"
        case .exit: "/tasks/exit"
        case .delete: "/tasks/delete"
        case .oom: "/tasks/oom"
        case .execAdded: "/tasks/exec-added"
        case .execStarted: "/tasks/exec-started"
        case .paused: "/tasks/paused"
        case .resumed: "/tasks/resumed"
        case .checkpointed: "/tasks/checkpointed"
        }
    }

    /// The bare type URL, e.g. `containerd.events.TaskExit`.
    public var typeURL: String {
        let name = switch self {
        case .create: "TaskCreate"
        case .start: "TaskStart"
        case .exit: "TaskExit"
        case .delete: "TaskDelete"
        case .oom: "TaskOOM"
        case .execAdded: "TaskExecAdded"
        case .execStarted: "TaskExecStarted"
        case .paused: "TaskPaused"
        case .resumed: "TaskResumed"
        case .checkpointed: "TaskCheckpointed"
        }
        return "containerd.events." + name
    }

    /// The event message's wire encoding.
    public func encoded() -> [UInt8] {
        var w = ProtoWriter()
        switch self {
        case let .create(containerID, bundle, rootfs, io, checkpoint, pid):
            w.string(1, containerID)
            w.string(2, bundle)
            for mount in rootfs { w.message(3, mount) }
            var taskIO = ProtoWriter()
            taskIO.string(1, io.stdin)
            taskIO.string(2, io.stdout)
            taskIO.string(3, io.stderr)
            taskIO.bool(4, io.terminal)
            w.lengthDelimited(4, taskIO.bytes)
            w.string(5, checkpoint)
            w.uint32(6, pid)
        case let .start(containerID, pid):
            w.string(1, containerID)
            w.uint32(2, pid)
        case let .exit(containerID, id, pid, exitStatus, exitedAt):
            w.string(1, containerID)
            w.string(2, id)
            w.uint32(3, pid)
            w.uint32(4, exitStatus)
            w.message(5, exitedAt)
        case let .delete(containerID, pid, exitStatus, exitedAt, id):
            w.string(1, containerID)
            w.uint32(2, pid)
            w.uint32(3, exitStatus)
            w.message(4, exitedAt)
            w.string(5, id)
        case let .oom(containerID), let .paused(containerID), let .resumed(containerID):
            w.string(1, containerID)
        case let .execAdded(containerID, execID):
            w.string(1, containerID)
            w.string(2, execID)
        case let .execStarted(containerID, execID, pid):
            w.string(1, containerID)
            w.string(2, execID)
            w.uint32(3, pid)
        case let .checkpointed(containerID, checkpoint):
            w.string(1, containerID)
            w.string(2, checkpoint)
        }
        return w.bytes
    }

    /// The event as an `Any` with its bare type URL.
    public var any: ProtoAny { ProtoAny(typeURL: typeURL, value: encoded()) }
}

/// `containerd.services.events.ttrpc.v1.Envelope`.
public struct EventEnvelope: ProtoMessage, Hashable {
    public var timestamp = ProtoTimestamp()
    public var namespace = ""
    public var topic = ""
    public var event: ProtoAny?
    public init() {}
    public init(timestamp: ProtoTimestamp, namespace: String, event: TaskEvent) {
        self.timestamp = timestamp
        self.namespace = namespace
        self.topic = event.topic
        self.event = event.any
    }
    public mutating func decodeField(_ field: Int, _ value: ProtoReader.Value) throws(BerthError) {
        switch field {
        case 1: timestamp = try value.requireMessage(ProtoTimestamp.self)
        case 2: namespace = try value.requireString("Envelope.namespace")
        case 3: topic = try value.requireString("Envelope.topic")
        case 4: event = try value.requireMessage(ProtoAny.self)
        default: break
        }
    }
    public func encode(to writer: inout ProtoWriter) {
        writer.message(1, timestamp)
        writer.string(2, namespace)
        writer.string(3, topic)
        writer.message(4, event)
    }
}

/// `containerd.services.events.ttrpc.v1.ForwardRequest`.
public struct ForwardRequest: ProtoMessage, Hashable {
    public var envelope: EventEnvelope?
    public init() {}
    public init(envelope: EventEnvelope) { self.envelope = envelope }
    public mutating func decodeField(_ field: Int, _ value: ProtoReader.Value) throws(BerthError) {
        if field == 1 { envelope = try value.requireMessage(EventEnvelope.self) }
    }
    public func encode(to writer: inout ProtoWriter) { writer.message(1, envelope) }
}
