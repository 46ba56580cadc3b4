import BerthCore
import BerthSystem
import BerthTTRPC
import CBerthSystem
import Glibc

/// berth-shim's command line, parsed the way Go's `flag` package parses containerd shims:
/// `-namespace NS -address A -publish-binary B -id ID [-debug] [-bundle P] [-socket S] [start|delete]`.
/// `-flag value`, `-flag=value` and `--flag` forms are accepted; the first non-flag is the action.
public struct ShimArguments: Sendable, Hashable {
    public var namespace = ""
    public var address = ""
    public var publishBinary = "containerd"
    public var id = ""
    public var bundle = ""
    public var socket = ""
    public var debug = false
    public var version = false
    /// `start`, `delete`, or empty for the daemonised server.
    public var action = ""

    public init() {}

    /// - Throws: `BerthError.invalidArgument` for an unknown flag or a flag without its value.
    public init(parsing arguments: [String]) throws(BerthError) {
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            guard argument.hasPrefix("-"), argument != "-", argument != "--" else {
                if argument == "--", index < arguments.count { action = arguments[index] }
                else if argument != "--" { action = argument }
                break
            }
            var name = String(argument.drop(while: { $0 == "-" }))
            var value: String?
            if let equals = name.firstIndex(of: "=") {
                value = String(name[name.index(after: equals)...])
                name = String(name[..<equals])
            }
            switch name {
            case "debug": debug = value.map { $0 != "false" } ?? true
            case "v": version = true
            case "namespace", "address", "publish-binary", "id", "bundle", "socket":
                if value == nil {
                    guard index < arguments.count else { throw .invalidArgument("flag needs an argument: -\(name)") }
                    value = arguments[index]
                    index += 1
                }
                switch name {
                case "namespace": namespace = value!
                case "address": address = value!
                case "publish-binary": publishBinary = value!
                case "id": id = value!
                case "bundle": bundle = value!
                default: socket = value!
                }
            default:
                throw .invalidArgument("flag provided but not defined: -\(name)")
            }
        }
    }
}

/// The three ways berth-shim runs: `start` (make the socket, daemonise, print the address),
/// `delete` (clean up after a dead shim, print a DeleteResponse), and the daemonised server.
public enum ShimCommand {
    public static let socketDirectory = "/run/containerd/s"

    /// Runs the shim; returns the process exit code.
    public static func main(_ arguments: [String]) -> Int32 {
        let parsed: ShimArguments
        do {
            parsed = try ShimArguments(parsing: Array(arguments.dropFirst()))
        } catch {
            log("berth-shim: \(error.message)")
            return 2
        }
        if parsed.version {
            print("berth-shim\n  Version: 0.1.0")
            return 0
        }
        guard !parsed.namespace.isEmpty else {
            log("berth-shim: shim namespace cannot be empty")
            return 1
        }
        do {
            switch parsed.action {
            case "start": try start(parsed)
            case "delete": try delete(parsed)
            case "": try serve(parsed)
            default:
                log("berth-shim: unknown action \(parsed.action)")
                return 1
            }
            return 0
        } catch {
            log("berth-shim: \(error.message)")
            return 1
        }
    }

    /// `unix:///run/containerd/s/<hex(sha256(address/ns/group))>`.
    public static func socketAddress(daemonAddress: String, namespace: String, group: String) -> String {
        "unix://\(socketDirectory)/" + SHA256.hex(joinPath(daemonAddress, namespace, group))
    }

    // MARK: - start

    static func start(_ arguments: ShimArguments) throws(BerthError) {
        markInheritedDescriptorsCloseOnExec()
        let bundle = currentDirectory()
        let spec = try BundleSpec.load(bundle: bundle)
        let address = socketAddress(daemonAddress: arguments.address, namespace: arguments.namespace,
                                    group: spec.groupID(default: arguments.id))
        let path = String(address.dropFirst("unix://".count))
        let stdinOptions = readAll(0)

        let listener: Int32
        switch try listen(path) {
        case .alreadyServing:
            // A shim already serves this group: reuse it.
            try writeFileAtomically(bundle + "/address", Array(address.utf8))
            writeStdout(address)
            return
        case .listening(let fd):
            listener = fd
        }
        // The server is this process forked, not the program run again: `start` has no threads
        // and changed nothing an exec would reset that the child does not reset itself, and the
        // server is ready some milliseconds sooner (no exec, no second runtime start-up).
        let pid = fork()
        if pid == 0 { becomeServer(arguments, listener: listener) }
        close(listener)
        guard pid > 0 else {
            let failure = errno
            unlink(path)
            throw errnoError("fork", errno: failure)
        }
        do {
            let options = try RuncOptions(any: stdinOptions.isEmpty ? nil : ProtoAny(decoding: stdinOptions))
            if !options.shimCgroup.isEmpty { joinCgroup(pid: pid, path: options.shimCgroup) }
            adjustOOMScore(pid: pid)
            try writeFileAtomically(bundle + "/address", Array(address.utf8))
        } catch {
            kill(pid, SIGKILL)
            unlink(path)
            throw error
        }
        writeStdout(address)
    }

    /// The forked child of `start`: stdio on /dev/null (the parent's stdout is the daemon's pipe,
    /// read to its end), the listener as descriptor 3 and no other, signals as a new program has
    /// them, then the server.
    private static func becomeServer(_ arguments: ShimArguments, listener: Int32) -> Never {
        let null = open("/dev/null", O_RDWR)
        for fd: Int32 in 0...2 { dup2(null, fd) }
        if listener == 3 { _ = fcntl(3, F_SETFD, 0) } else { dup2(listener, 3) }
        _ = cberth_close_from(4)
        var none = sigset_t()
        sigemptyset(&none)
        sigprocmask(SIG_SETMASK, &none, nil)
        hideStartArgument()
        var server = arguments
        server.action = ""
        do {
            try serve(server)
        } catch {
            log("berth-shim: \(error.message)")
            _exit(1)
        }
        _exit(0)
    }

    /// Blanks the `start` action (the last argument, after the flags) in this process's command
    /// line, so `ps` shows the running shim as it shows one started without it.
    private static func hideStartArgument() {
        let last = Int(CommandLine.argc) - 1
        guard last > 0, let argument = CommandLine.unsafeArgv[last], strcmp(argument, "start") == 0 else { return }
        memset(argument, 0, strlen(argument))
    }

    enum ListenResult {
        case listening(Int32)
        case alreadyServing
    }

    /// Binds the shim socket (mode 0600, parent made), or finds a live shim on it.
    static func listen(_ path: String) throws(BerthError) -> ListenResult {
        try FileSystem.makeDirectories(FileSystem.parentDirectory(of: path), mode: 0o711)
        for _ in 0..<2 {
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw errnoError("socket") }
            var address = unixAddress(path)
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            if bound == 0 {
                guard Glibc.listen(fd, 128) == 0 else { close(fd); throw errnoError("listen \(path)") }
                chmod(path, 0o600)
                return .listening(fd)
            }
            let failure = errno
            close(fd)
            guard failure == EADDRINUSE else { throw errnoError("bind \(path)", errno: failure) }
            if let client = try? TTRPCClient(path: path) {
                client.close()
                return .alreadyServing
            }
            unlink(path)
        }
        throw .internal("shim socket \(path): address in use")
    }

    // MARK: - serve

    static func serve(_ arguments: ShimArguments) throws(BerthError) {
        reduceResidentMemory()
        _ = setsid()
        // The daemon reads the shim log FIFO; without one, keep stderr as it is (/dev/null).
        let logFD = open("log", O_WRONLY | O_CLOEXEC | O_NONBLOCK)
        if logFD >= 0 {
            _ = fcntl(logFD, F_SETFL, fcntl(logFD, F_GETFL) & ~O_NONBLOCK)
            dup2(logFD, 2)
            close(logFD)
        }
        try Reaper.prepareProcess()
        let publisher = EventPublisher(address: getenv("TTRPC_ADDRESS").map { String(cString: $0) },
                                       namespace: arguments.namespace)
        try publisher.start()
        let service = TaskService(namespace: arguments.namespace, publisher: publisher, debug: arguments.debug)
        try service.reaper.start()
        let server = TTRPCServer()
        service.register(on: server)
        var socketPath = ""
        markInheritedDescriptorsCloseOnExec()
        if arguments.socket.isEmpty {
            socketPath = localSocketPath(of: 3) ?? ""
            try server.serve(listenerFD: 3)
        } else {
            socketPath = arguments.socket.hasPrefix("unix://") ? String(arguments.socket.dropFirst(7)) : arguments.socket
            try server.listen(path: socketPath)
        }
        service.waitForShutdown()
        let unsent = publisher.flush(timeout: .seconds(3))
        if !unsent.isEmpty { log("berth-shim: exiting with events unsent after 3 s: \(unsent.joined(separator: " "))") }
        let running = server.shutdown(gracePeriod: .seconds(2))
        if running > 0 { log("berth-shim: exiting with \(running) calls still running after 2 s") }
        if !socketPath.isEmpty { unlink(socketPath) }
        // _exit, not exit: the reaper, OOM and connection threads are still running, and exit's
        // clean-up (atexit handlers, the runtime's static destructors, stdio locks) would run
        // under them. A shim in CI once outlived a clean Shutdown by over 15 s, its bundle gone
        // and nothing pending; a stalled exit is the likeliest cause. Everything the shim writes
        // goes out with write(2), so there is nothing to flush.
        _exit(0)
    }

    /// A shim's memory is paid once per container. Called first thing in the server, while it
    /// has one thread: one malloc arena for its few threads (glibc would give each thread an
    /// arena of its own, nine in all).
    static func reduceResidentMemory() {
        _ = cberth_mallopt_arena_max(1)
    }

    // MARK: - delete

    /// Cleans up after a shim that is gone: `runtime delete --force`, unmount rootfs, and print
    /// `DeleteResponse{pid, 137, now}` on stdout.
    static func delete(_ arguments: ShimArguments) throws(BerthError) {
        let cwd = currentDirectory()
        let bundle = joinPath(FileSystem.parentDirectory(of: arguments.bundle.isEmpty ? cwd : arguments.bundle), arguments.id)
        guard let runtime = readFile(bundle + "/runtime") else {
            throw .notFound("open \(bundle)/runtime: no such file or directory")
        }
        var options = RuncOptions()
        if let bytes = readFile(bundle + "/options.json"), let parsed = try? RuncOptions(json: bytes) { options = parsed }
        let binary = String(decoding: runtime, as: UTF8.self)
        if !binary.isEmpty { options.binaryName = binary }
        try Reaper.prepareProcess()
        let reaper = Reaper { _, _ in }
        try reaper.start()
        let driver = RuntimeDriver(options: options, namespace: arguments.namespace, bundle: bundle, reaper: reaper)
        do {
            try driver.delete(id: arguments.id, force: true)
        } catch {
            log("berth-shim: warning: \(error.message)")
        }
        try? Mounter.unmountAll(bundle + "/rootfs")
        let pid = readText(bundle + "/init.pid").flatMap { UInt32($0.filter { $0.isNumber }) } ?? 0
        let response = DeleteResponse(pid: pid, exitStatus: 128 + UInt32(SIGKILL), exitedAt: .now())
        response.encoded().withUnsafeBytes { _ = writeAll(1, $0) }
    }

    // MARK: - helpers

    static func joinCgroup(pid: pid_t, path: String) {
        let base = access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0 ? "/sys/fs/cgroup" : "/sys/fs/cgroup/pids"
        try? writeFile(base + (path.hasPrefix("/") ? path : "/" + path) + "/cgroup.procs", Array("\(pid)".utf8))
    }

    /// The shim's oom_score_adj is the daemon's (the parent of `start`) plus one.
    static func adjustOOMScore(pid: pid_t) {
        guard let text = readText("/proc/\(getppid())/oom_score_adj"),
              let score = Int(text.filter { $0.isNumber || $0 == "-" }) else { return }
        try? writeFile("/proc/\(pid)/oom_score_adj", Array("\(min(score + 1, 1000))".utf8))
    }

    static func writeStdout(_ text: String) {
        Array(text.utf8).withUnsafeBytes { _ = writeAll(1, $0) }
    }

    static func unixAddress(_ path: String) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.enumerated() where index < raw.count - 1 { raw[index] = byte }
        }
        return address
    }

    /// The path a listening unix socket is bound to.
    static func localSocketPath(of fd: Int32) -> String? {
        var address = sockaddr_un()
        var length = socklen_t(MemoryLayout<sockaddr_un>.size)
        let rc = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard rc == 0 else { return nil }
        let path = withUnsafeBytes(of: address.sun_path) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        return path.isEmpty ? nil : path
    }
}

/// `filepath.Join` for the simple cases the shim meets: joins with `/` and drops duplicate slashes.
func joinPath(_ parts: String...) -> String {
    var joined = parts.filter { !$0.isEmpty }.joined(separator: "/")
    while joined.containsBytes("//") { joined = joined.replacingBytes("//", with: "/") }
    if joined.count > 1, joined.hasSuffix("/") { joined.removeLast() }
    return joined
}

