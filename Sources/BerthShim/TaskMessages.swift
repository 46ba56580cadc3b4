import BerthCore
import BerthTTRPC

// The request and response messages of `containerd.task.v2.Task` (runtime/v2/task/shim.proto),
// with containerd's field numbers. Only the fields the shim reads are decoded, only the fields it
// fills are encoded, but each message handles every field of its proto so tests can round-trip.

public struct CreateTaskRequest: ProtoMessage, Hashable {
    public var id = ""
    public var bundle = ""
    public var rootfs: [ProtoMount] = []
    public var terminal = false
    public var stdin = ""
    public var stdout = ""
    public var stderr = ""
    public var checkpoint = ""
    public var parentCheckpoint = ""
    public var options: ProtoAny?

    public init() {}

    public mutating func decodeField(_ field: Int, _ value: ProtoReader.Value) throws(BerthError) {
        switch field {
        case 1: id = try value.requireString("CreateTaskRequest.id")
        case 2: bundle = try value.requireString("CreateTaskRequest.bundle")
        case 3: rootfs.append(try value.requireMessage(ProtoMount.self))
        case 4: terminal = value.bool
        case 5: stdin = try value.requireString("CreateTaskRequest.stdin")
        case 6: stdout = try value.requireString("CreateTaskRequest.stdout")
        case 7: stderr = try value.requireString("CreateTaskRequest.stderr")
        case 8: checkpoint = try value.requireString("CreateTaskRequest.checkpoint")
        case 9: parentCheckpoint = try value.requireString("CreateTaskRequest.parent_checkpoint")
        case 10: options = try value.requireMessage(ProtoAny.self)
        default: break
        }
    }

    public func encode(to writer: inout ProtoWriter) {
        writer.string(1, id)
        writer.string(2, bundle)
        for mount in rootfs { writer.message(3, mount) }
        writer.bool(4, terminal)
        writer.string(5, stdin)
        writer.string(6, stdout)
        writer.string(7, stderr)
        writer.string(8, checkpoint)
        writer.string(9, parentCheckpoint)
        writer.message(10, options)
    }
}

/// `CreateTaskResponse`, `StartResponse`: one pid.
public struct PidResponse: ProtoMessage, Hashable {
    public var pid: UInt32 = 0
    public init() {}
    public init(pid: UInt32) { self.pid = pid }
    public mutating func decodeField(_ field: Int, _ value: ProtoReader.Value) throws(BerthError) {
        if field == 1 { pid = value.uint32 }
    }
    public func encode(to writer: inout ProtoWriter) { writer.uint32(1, pid) }
}

/// `StartRequest`, `DeleteRequest`, `StateRequest`, `WaitRequest`: a container and maybe an exec.
public struct ProcessRequest: ProtoMessage, Hashable {
    public var id = ""
    public var execID = ""
    public init() {}
    public init(id: String, execID: String = "") {
        self.id = id
        self.execID = execID
    }
    public mutating func decodeField(_ field: Int, _ value: ProtoReader.Value) throws(BerthError) {
        switch field {
        case 1: id = try value.requireString("id")
        case 2: execID = try value.requireString("exec_id")
        default: break
        }
    }
    public func encode(to writer: inout ProtoWriter) {
        writer.string(1, id)
        writer.string(2, execID)
    }
}

/// `PauseRequest`, `ResumeRequest`, `PidsRequest`, `StatsRequest`, `ConnectRequest`: an id.
public struct IDRequest: ProtoMessage, Hashable {
    public var id = ""
    public init() {}
    public init(id: String) { self.id = id }
    public mutating func decodeField(_ field: Int, _ value: ProtoReader.Value) throws(BerthError) {
        if field == 1 { id = try value.requireString("id") }
    }
    public func encode(to writer: inout ProtoWriter) { writer.string(1, id) }
}

public struct DeleteResponse: ProtoMessage, Hashable {
    public var pid: UInt32 = 0
    public var exitStatus: UInt32 = 0
    public var exitedAt = ProtoTimestamp()
    public init() {}
    public init(pid: UInt32, exitStatus: UInt32, exitedAt: ProtoTimestamp) {
        self.pid = pid
        self.exitStatus = exitStatus
        self.exitedAt = exitedAt
    }
    public mutating func decodeField(_ field: Int, _ value: ProtoReader.Value) throws(BerthError) {
        switch field {
        case 1: pid = value.uint32
        case 2: exitStatus = value.uint32
        case 3: exitedAt = try value.requireMessage(ProtoTimestamp.self)
        default: break
        }
    }
    public func encode(to writer: inout ProtoWriter) {
        writer.uint32(1, pid)
        writer.uint32(2, exitStatus)
        writer.message(3, exitedAt)
    }
}

public struct ExecProcessRequest: ProtoMessage, Hashable {
    public var id = ""
    public var execID = ""
    public var terminal = false
    public var stdin = ""
    public var stdout = ""
    public var stderr = ""
    public var spec: ProtoAny?
    public init() {}
    public mutating func decodeField(_ field: Int, _ value: ProtoReader.Value) throws(BerthError) {
        switch field {
        case 1: id = try value.requireString("ExecProcessRequest.id")
        case 2: execID = try value.requireString("ExecProcessRequest.exec_id")
        case 3: terminal = value.bool
        case 4: stdin = try value.requireString("ExecProcessRequest.stdin")
        case 5: stdout = try value.requireString("ExecProcessRequest.stdout")
        case 6: stderr = try value.requireString("ExecProcessRequest.stderr")
        case 7: spec = try value.requireMessage(ProtoAny.self)
        default: break
        }
    }
    public func encode(to writer: inout ProtoWriter) {
        writer.string(1, id)
        writer.string(2, execID)
        writer.bool(3, terminal)
        writer.string(4, stdin)
        writer.string(5, stdout)
        writer.string(6, stderr)
        writer.message(7, spec)
    }
}

public struct ResizePtyRequest: ProtoMessage, Hashable {
    public var id = ""
    public var execID = ""
    public var width: UInt32 = 0
    public var height: UInt32 = 0
    public init() {}
    public mutating func decodeField(_ field: Int, _ value: ProtoReader.Value) throws(BerthError) {
        switch field {
        case 1: id = try value.requireString("ResizePtyRequest.id")
        case 2: execID = try value.requireString("ResizePtyRequest.exec_id")
        case 3: width = value.uint32
        case 4: height = value.uint32
        default: break
        }
    }
    public func encode(to writer: inout ProtoWriter) {
        writer.string(1, id)
        writer.string(2, execID)
        writer.uint32(3, width)
        writer.uint32(4, height)
    }
}

public struct StateResponse: ProtoMessage, Hashable {
    public var id = ""
    public var bundle = ""
    public var pid: UInt32 = 0
    public var status = ProtoTaskStatus.unknown
    public var stdin = ""
    public var stdout = ""
    public var stderr = ""
    public var terminal = false
    public var exitStatus: UInt32 = 0
    public var exitedAt = ProtoTimestamp()
    public var execID = ""
    public init() {}
    public mutating func decodeField(_ field: Int, _ value: ProtoReader.Value) throws(BerthError) {
        switch field {
        case 1: id = try value.requireString("StateResponse.id")
        case 2: bundle = try value.requireString("StateResponse.bundle")
        case 3: pid = value.uint32
        case 4: status = ProtoTaskStatus(rawValue: value.uint64) ?? .unknown
        case 5: stdin = try value.requireString("StateResponse.stdin")
        case 6: stdout = try value.requireString("StateResponse.stdout")
        case 7: stderr = try value.requireString("StateResponse.stderr")
        case 8: terminal = value.bool
        case 9: exitStatus = value.uint32
        case 10: exitedAt = try value.requireMessage(ProtoTimestamp.self)
        case 11: execID = try value.requireString("StateResponse.exec_id")
        default: break
        }
    }
    public func encode(to writer: inout ProtoWriter) {
        writer.string(1, id)
        writer.string(2, bundle)
        writer.uint32(3, pid)
        writer.uint(4, status.rawValue)
        writer.string(5, stdin)
        writer.string(6, stdout)
        writer.string(7, stderr)
        writer.bool(8, terminal)
        writer.uint32(9, exitStatus)
        writer.message(10, exitedAt)
        writer.string(11, execID)
    }
}

public struct KillRequest: ProtoMessage, Hashable {
    public var id = ""
    public var execID = ""
    public var signal: UInt32 = 0
    public var all = false
    public init() {}
    public mutating func decodeField(_ field: Int, _ value: ProtoReader.Value) throws(BerthError) {
        switch field {
        case 1: id = try value.requireString("KillRequest.id")
        case 2: execID = try value.requireString("KillRequest.exec_id")
        case 3: signal = value.uint32
        case 4: all = value.bool
        default: break
        }
    }
    public func encode(to writer: inout ProtoWriter) {
        writer.string(1, id)
        writer.string(2, execID)
        writer.uint32(3, signal)
        writer.bool(4, all)
    }
}

public struct CloseIORequest: ProtoMessage, Hashable {
    public var id = ""
    public var execID = ""
    public var stdin = false
    public init() {}
    public mutating func decodeField(_ field: Int, _ value: ProtoReader.Value) throws(BerthError) {
        switch field {
        case 1: id = try value.requireString("CloseIORequest.id")
        case 2: execID = try value.requireString("CloseIORequest.exec_id")
        case 3: stdin = value.bool
        default: break
        }
    }
    public func encode(to writer: inout ProtoWriter) {
        writer.string(1, id)
        writer.string(2, execID)
        writer.bool(3, stdin)
    }
}

/// `containerd.task.v2.ProcessInfo`.
public struct ProcessInfo: ProtoMessage, Hashable {
    public var pid: UInt32 = 0
    public var info: ProtoAny?
    public init() {}
    public init(pid: UInt32, info: ProtoAny? = nil) {
        self.pid = pid
        self.info = info
    }
    public mutating func decodeField(_ field: Int, _ value: ProtoReader.Value) throws(BerthError) {
        switch field {
        case 1: pid = value.uint32
        case 2: info = try value.requireMessage(ProtoAny.self)
        default: break
        }
    }
    public func encode(to writer: inout ProtoWriter) {
        writer.uint32(1, pid)
        writer.message(2, info)
    }
}

public struct PidsResponse: ProtoMessage, Hashable {
    public var processes: [ProcessInfo] = []
    public init() {}
    public mutating func decodeField(_ field: Int, _ value: ProtoReader.Value) throws(BerthError) {
        if field == 1 { processes.append(try value.requireMessage(ProcessInfo.self)) }
    }
    public func encode(to writer: inout ProtoWriter) {
        for process in processes { writer.message(1, process) }
    }
}

/// `containerd.runc.v1.ProcessDetails`, the `info` of an exec process in `Pids`.
public struct ProcessDetails: ProtoMessage, Hashable {
    public static let typeURL = "containerd.runc.v1.ProcessDetails"
    public var execID = ""
    public init() {}
    public init(execID: String) { self.execID = execID }
    public mutating func decodeField(_ field: Int, _ value: ProtoReader.Value) throws(BerthError) {
        if field == 1 { execID = try value.requireString("ProcessDetails.exec_id") }
    }
    public func encode(to writer: inout ProtoWriter) { writer.string(1, execID) }
}

public struct CheckpointTaskRequest: ProtoMessage, Hashable {
    public var id = ""
    public var path = ""
    public var options: ProtoAny?
    public init() {}
    public mutating func decodeField(_ field: Int, _ value: ProtoReader.Value) throws(BerthError) {
        switch field {
        case 1: id = try value.requireString("CheckpointTaskRequest.id")
        case 2: path = try value.requireString("CheckpointTaskRequest.path")
        case 3: options = try value.requireMessage(ProtoAny.self)
        default: break
        }
    }
    public func encode(to writer: inout ProtoWriter) {
        writer.string(1, id)
        writer.string(2, path)
        writer.message(3, options)
    }
}

public struct UpdateTaskRequest: ProtoMessage, Hashable {
    public var id = ""
    public var resources: ProtoAny?
    public var annotations: [String: String] = [:]
    public init() {}
    public mutating func decodeField(_ field: Int, _ value: ProtoReader.Value) throws(BerthError) {
        switch field {
        case 1: id = try value.requireString("UpdateTaskRequest.id")
        case 2: resources = try value.requireMessage(ProtoAny.self)
        case 3:
            let entry = try value.requireMessage(MapEntry.self)
            annotations[entry.key] = entry.value
        default: break
        }
    }
    public func encode(to writer: inout ProtoWriter) {
        writer.string(1, id)
        writer.message(2, resources)
        for key in annotations.keys.sorted() {
            writer.message(3, MapEntry(key: key, value: annotations[key]!))
        }
    }
}

/// One entry of a `map<string, string>` (key 1, value 2).
struct MapEntry: ProtoMessage, Hashable {
    var key = ""
    var value = ""
    init() {}
    init(key: String, value: String) {
        self.key = key
        self.value = value
    }
    mutating func decodeField(_ field: Int, _ value: ProtoReader.Value) throws(BerthError) {
        switch field {
        case 1: key = try value.requireString("map key")
        case 2: self.value = try value.requireString("map value")
        default: break
        }
    }
    func encode(to writer: inout ProtoWriter) {
        writer.string(1, key)
        writer.string(2, value)
    }
}

public struct WaitResponse: ProtoMessage, Hashable {
    public var exitStatus: UInt32 = 0
    public var exitedAt = ProtoTimestamp()
    public init() {}
    public init(exitStatus: UInt32, exitedAt: ProtoTimestamp) {
        self.exitStatus = exitStatus
        self.exitedAt = exitedAt
    }
    public mutating func decodeField(_ field: Int, _ value: ProtoReader.Value) throws(BerthError) {
        switch field {
        case 1: exitStatus = value.uint32
        case 2: exitedAt = try value.requireMessage(ProtoTimestamp.self)
        default: break
        }
    }
    public func encode(to writer: inout ProtoWriter) {
        writer.uint32(1, exitStatus)
        writer.message(2, exitedAt)
    }
}

public struct StatsResponse: ProtoMessage, Hashable {
    public var stats: ProtoAny?
    public init() {}
    public init(stats: ProtoAny) { self.stats = stats }
    public mutating func decodeField(_ field: Int, _ value: ProtoReader.Value) throws(BerthError) {
        if field == 1 { stats = try value.requireMessage(ProtoAny.self) }
    }
    public func encode(to writer: inout ProtoWriter) { writer.message(1, stats) }
}

public struct ConnectResponse: ProtoMessage, Hashable {
    public var shimPID: UInt32 = 0
    public var taskPID: UInt32 = 0
    public var version = ""
    public init() {}
    public mutating func decodeField(_ field: Int, _ value: ProtoReader.Value) throws(BerthError) {
        switch field {
        case 1: shimPID = value.uint32
        case 2: taskPID = value.uint32
        case 3: version = try value.requireString("ConnectResponse.version")
        default: break
        }
    }
    public func encode(to writer: inout ProtoWriter) {
        writer.uint32(1, shimPID)
        writer.uint32(2, taskPID)
        writer.string(3, version)
    }
}

public struct ShutdownRequest: ProtoMessage, Hashable {
    public var id = ""
    public var now = false
    public init() {}
    public mutating func decodeField(_ field: Int, _ value: ProtoReader.Value) throws(BerthError) {
        switch field {
        case 1: id = try value.requireString("ShutdownRequest.id")
        case 2: now = value.bool
        default: break
        }
    }
    public func encode(to writer: inout ProtoWriter) {
        writer.string(1, id)
        writer.bool(2, now)
    }
}

/// `containerd.runc.v1.Options`, the runtime options of `Create` and of `start`'s stdin.
public struct RuncOptions: ProtoMessage, Hashable {
    public static let typeURL = "containerd.runc.v1.Options"
    public var noPivotRoot = false
    public var noNewKeyring = false
    public var shimCgroup = ""
    public var ioUID: UInt32 = 0
    public var ioGID: UInt32 = 0
    public var binaryName = ""
    public var root = ""
    public var criuPath = ""
    public var systemdCgroup = false
    public var criuImagePath = ""
    public var criuWorkPath = ""
    public init() {}
    public mutating func decodeField(_ field: Int, _ value: ProtoReader.Value) throws(BerthError) {
        switch field {
        case 1: noPivotRoot = value.bool
        case 2: noNewKeyring = value.bool
        case 3: shimCgroup = try value.requireString("Options.shim_cgroup")
        case 4: ioUID = value.uint32
        case 5: ioGID = value.uint32
        case 6: binaryName = try value.requireString("Options.binary_name")
        case 7: root = try value.requireString("Options.root")
        case 8: criuPath = try value.requireString("Options.criu_path")
        case 9: systemdCgroup = value.bool
        case 10: criuImagePath = try value.requireString("Options.criu_image_path")
        case 11: criuWorkPath = try value.requireString("Options.criu_work_path")
        default: break
        }
    }
    public func encode(to writer: inout ProtoWriter) {
        writer.bool(1, noPivotRoot)
        writer.bool(2, noNewKeyring)
        writer.string(3, shimCgroup)
        writer.uint32(4, ioUID)
        writer.uint32(5, ioGID)
        writer.string(6, binaryName)
        writer.string(7, root)
        writer.string(8, criuPath)
        writer.bool(9, systemdCgroup)
        writer.string(10, criuImagePath)
        writer.string(11, criuWorkPath)
    }

    /// Decodes the options `Any` of `Create` or of `start`'s stdin.
    ///
    /// - Throws: `BerthError.invalidArgument` for any type other than `containerd.runc.v1.Options`.
    public init(any: ProtoAny?) throws(BerthError) {
        guard let any, !(any.typeURL.isEmpty && any.value.isEmpty) else {
            self.init()
            return
        }
        guard any.typeName == Self.typeURL else {
            throw .invalidArgument("runtime options: unsupported type \(any.typeURL), want \(Self.typeURL)")
        }
        try self.init(decoding: any.value)
    }
}
