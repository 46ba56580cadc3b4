import BerthCore
import CBerthSystem
import Glibc

/// Runs the OCI runtime binary (runc by default, crun through `Options.binary_name`) the way
/// containerd's runc shim does:
/// `runc --root <root>/<ns> --log <bundle>/log.json --log-format json [--systemd-cgroup] <command> ...`.
///
/// Failures carry the runtime's own message: the last `"level":"error"` entry it appended to
/// log.json during this call, else its stderr.
public struct RuntimeDriver: Sendable {
    public static let defaultRoot = "/run/containerd/runc"

    public let binary: String
    /// `--root`: the options' root (or /run/containerd/runc) joined with the namespace.
    public let root: String
    public let bundle: String
    public let systemdCgroup: Bool
    let reaper: Reaper

    public init(options: RuncOptions, namespace: String, bundle: String, reaper: Reaper) {
        binary = options.binaryName.isEmpty ? "runc" : options.binaryName
        root = (options.root.isEmpty ? Self.defaultRoot : options.root) + "/" + namespace
        self.bundle = bundle
        systemdCgroup = options.systemdCgroup
        self.reaper = reaper
    }

    public var logPath: String { "\(bundle)/log.json" }

    /// Descriptors for the runtime's stdio, which `create` and `exec` hand to the container.
    public struct Stdio: Sendable {
        public var stdin: Int32?
        public var stdout: Int32?
        public var stderr: Int32?
        public init(stdin: Int32? = nil, stdout: Int32? = nil, stderr: Int32? = nil) {
            self.stdin = stdin
            self.stdout = stdout
            self.stderr = stderr
        }
    }

    /// Runs one runtime command; returns its stdout.
    ///
    /// - Throws: `BerthError` with code `code` and the message `"<what>: <runtime message>"`.
    @discardableResult
    func run(_ arguments: [String], what: String, stdio: Stdio? = nil, captureOutput: Bool = false,
             code: BerthError.Code = .unknownRuntime) throws(BerthError) -> [UInt8] {
        var argv = [binary, "--root", root, "--log", logPath, "--log-format", "json"]
        if systemdCgroup { argv.append("--systemd-cgroup") }
        argv += arguments
        var spec = SpawnSpec(executable: binary, arguments: argv)
        if Self.isCrun(binary), HybridCgroups.present {
            spec.hiddenMount = HybridCgroups.unifiedMount
        }
        var outPipe: [Int32] = [-1, -1]
        var errPipe: [Int32] = [-1, -1]
        if let stdio {
            spec.stdin = stdio.stdin
            spec.stdout = stdio.stdout
            spec.stderr = stdio.stderr
        } else {
            guard pipe2(&outPipe, O_CLOEXEC) == 0, pipe2(&errPipe, O_CLOEXEC) == 0 else {
                throw errnoError("\(what): pipe")
            }
            spec.stdout = outPipe[1]
            spec.stderr = errPipe[1]
        }
        let logOffset = fileSize(logPath)
        let pid: pid_t
        do {
            pid = try reaper.spawn(spec)
        } catch {
            for fd in outPipe + errPipe where fd >= 0 { close(fd) }
            throw BerthError(code, "\(what): \(error.message)")
        }
        var output: [UInt8] = []
        var errors: [UInt8] = []
        if stdio == nil {
            close(outPipe[1])
            close(errPipe[1])
            output = readAll(outPipe[0])
            errors = readAll(errPipe[0])
            close(outPipe[0])
            close(errPipe[0])
        }
        let exit = reaper.wait(pid)
        guard exit.code == 0 else {
            let message = lastLoggedError(since: logOffset)
                ?? nonEmpty(String(decoding: errors, as: UTF8.self))
                ?? "\(binary) exited with status \(exit.code)"
            throw BerthError(code, "\(what): \(message)")
        }
        _ = captureOutput
        return output
    }

    /// `create --bundle B --pid-file P [--console-socket S] [--no-pivot] [--no-new-keyring] ID`.
    public func create(id: String, pidFile: String, consoleSocket: String?, noPivotRoot: Bool, noNewKeyring: Bool,
                       stdio: Stdio) throws(BerthError) {
        var arguments = ["create", "--bundle", bundle, "--pid-file", pidFile]
        if let consoleSocket { arguments += ["--console-socket", consoleSocket] }
        if noPivotRoot { arguments.append("--no-pivot") }
        if noNewKeyring { arguments.append("--no-new-keyring") }
        arguments.append(id)
        try run(arguments, what: "OCI runtime create failed", stdio: stdio)
    }

    /// `start ID`, or for runc the same handshake done here.
    ///
    /// runc's `start` (1.1 through 1.3) is a handshake on `exec.fifo` in the container's state
    /// directory: the container's init blocks opening it for writing; `start` opens it for
    /// reading, reads init's byte until init's exec closes the FIFO, and removes it, and runc
    /// reports the container running from then on. Poststart hooks already ran in `create`.
    /// Doing the handshake in the shim spares a runc process, about a tenth of a
    /// `ctr run --rm`. Other runtimes, a state directory without the FIFO, and a NOTIFY_SOCKET
    /// (which `runc start` would serve) take the runtime's own `start`.
    public func start(id: String, initPID: Int32) throws(BerthError) {
        if Self.isRunc(binary), getenv("NOTIFY_SOCKET") == nil,
           try Self.startThroughExecFIFO(path: root + "/" + id + "/exec.fifo", initPID: initPID) {
            return
        }
        try run(["start", id], what: "OCI runtime start failed")
    }

    /// The reading side of runc's exec FIFO handshake; false when `path` is no FIFO.
    static func startThroughExecFIFO(path: String, initPID: Int32) throws(BerthError) -> Bool {
        // Non-blocking, so a dead init cannot hang the open; poll reports nothing until init has
        // opened its end and written or closed it.
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFIFO else { return false }
        var received = 0
        var buffer = [UInt8](repeating: 0, count: 64)
        while true {
            var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&entry, 1, 100)
            if ready < 0 {
                if errno == EINTR { continue }
                throw errnoError("OCI runtime start failed: poll \(path)")
            }
            if ready == 0 {
                // Still nothing: as runc, give up only when init is gone.
                guard received == 0, !processAlive(initPID) else { continue }
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                guard n > 0 else { throw .internal("OCI runtime start failed: container process is already dead") }
                received += n
                break
            }
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n > 0 {
                received += n
            } else if n == 0 {
                // init's exec (or its exit) closed the writing end.
                guard received > 0 else { throw .internal("OCI runtime start failed: cannot start an already running container") }
                break
            } else if errno != EAGAIN && errno != EINTR {
                throw errnoError("OCI runtime start failed: read \(path)")
            }
        }
        guard unlink(path) == 0 || errno == ENOENT else { throw errnoError("OCI runtime start failed: remove \(path)") }
        return true
    }

    /// `exec --process F --detach --pid-file P [--console-socket S] ID`.
    public func exec(id: String, processFile: String, pidFile: String, consoleSocket: String?, stdio: Stdio) throws(BerthError) {
        var arguments = ["exec", "--process", processFile, "--detach", "--pid-file", pidFile]
        if let consoleSocket { arguments += ["--console-socket", consoleSocket] }
        arguments.append(id)
        try run(arguments, what: "OCI runtime exec failed", stdio: stdio)
    }

    public func kill(id: String, signal: UInt32, all: Bool) throws(BerthError) {
        var arguments = ["kill"]
        if all { arguments.append("--all") }
        arguments += [id, String(signal)]
        do {
            try run(arguments, what: "OCI runtime kill failed")
        } catch {
            // runc says "container not running" / "process already finished" for a dead process.
            if error.message.containsBytes("not running") || error.message.containsBytes("already finished") {
                throw .notFound("process already finished: not found")
            }
            throw error
        }
    }

    public func delete(id: String, force: Bool) throws(BerthError) {
        try run(force ? ["delete", "--force", id] : ["delete", id], what: "OCI runtime delete failed")
    }

    public func pause(id: String) throws(BerthError) {
        try run(["pause", id], what: "OCI runtime pause failed")
    }

    public func resume(id: String) throws(BerthError) {
        try run(["resume", id], what: "OCI runtime resume failed")
    }

    public func update(id: String, resourcesFile: String) throws(BerthError) {
        try run(["update", "--resources", resourcesFile, id], what: "OCI runtime update failed")
    }

    /// The pids of the container's processes (`ps --format json`).
    public func pids(id: String) throws(BerthError) -> [Int32] {
        let output = try run(["ps", "--format", "json", id], what: "OCI runtime ps failed", captureOutput: true)
        let value = try JSONValue(parsing: output)
        return (value.arrayValue ?? []).compactMap { $0.intValue.map(Int32.init) }
    }

    /// `state ID` as parsed JSON.
    public func state(id: String) throws(BerthError) -> JSONValue {
        try JSONValue(parsing: run(["state", id], what: "OCI runtime state failed", captureOutput: true))
    }

    /// The `msg` of the last error entry the runtime appended to log.json after `offset`.
    func lastLoggedError(since offset: Int) -> String? {
        guard let bytes = readFile(logPath), bytes.count > offset else { return nil }
        var message: String?
        for line in bytes[offset...].split(separator: UInt8(ascii: "\n")) {
            guard let entry = try? JSONValue(parsing: Array(line)) else { continue }
            if entry["level"]?.stringValue == "error", let text = entry["msg"]?.stringValue {
                message = text
            }
        }
        return message
    }
}

extension BerthError.Code {
    /// What a failing runtime command becomes: containerd's shim reports these as Unknown;
    /// `internal` is the nearest code BerthError has, and ``TaskService`` sends it as Unknown.
    static var unknownRuntime: BerthError.Code { .internal }
}

/// True while `pid` exists and is not a zombie.
func processAlive(_ pid: Int32) -> Bool {
    guard pid > 0, let stat = readFile("/proc/\(pid)/stat"),
          let close = stat.lastIndex(of: UInt8(ascii: ")")), close + 2 < stat.count else { return false }
    return stat[close + 2] != UInt8(ascii: "Z")
}

private func nonEmpty(_ text: String) -> String? {
    var trimmed = Substring(text)
    while let last = trimmed.last, last.isWhitespace { trimmed.removeLast() }
    return trimmed.isEmpty ? nil : String(trimmed)
}

func fileSize(_ path: String) -> Int {
    var info = stat()
    return stat(path, &info) == 0 ? Int(info.st_size) : 0
}

/// pipe2(2) through CBerthSystem (glibc declares it only under _GNU_SOURCE).
func pipe2(_ fds: inout [Int32], _ flags: Int32) -> Int32 {
    fds.withUnsafeMutableBufferPointer { cberth_pipe2($0.baseAddress!, flags) }
}

extension RuntimeDriver {
    static func isCrun(_ binary: String) -> Bool {
        binary.split(separator: "/").last == "crun"
    }

    static func isRunc(_ binary: String) -> Bool {
        binary.split(separator: "/").last == "runc"
    }
}

/// crun refuses "hybrid" cgroups: the v1 hierarchies plus a cgroup2 mount at
/// /sys/fs/cgroup/unified ("cgroups in hybrid mode not supported, drop all controllers from
/// cgroupv2"). On such a host each crun call runs in a private mount namespace of its own without
/// that one mount (``SpawnSpec/hiddenMount``), where crun sees pure cgroup v1. The namespace is a
/// copy of the shim's, so the container's rootfs is there; the host's mounts are not changed.
enum HybridCgroups {
    static let unifiedMount = "/sys/fs/cgroup/unified"

    /// True when /sys/fs/cgroup is not cgroup2 but /sys/fs/cgroup/unified is.
    static let present: Bool = {
        let cgroup2Magic = 0x6367_7270
        func type(_ path: String) -> Int { cberth_fs_type(path) }
        return type("/sys/fs/cgroup") != cgroup2Magic && type(unifiedMount) == cgroup2Magic
    }()
}
