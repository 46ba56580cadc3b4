import BerthCore
import BerthSystem
import BerthTTRPC
import CBerthSystem
import Glibc

/// One process's stdio, as containerd's runc shim wires it.
///
/// Without a terminal the runtime gets pipes: the shim copies the client's stdin FIFO into one
/// and the others out to the stdout/stderr FIFOs. FIFOs are opened `O_RDWR`, which never blocks
/// and keeps the FIFO from ever seeing zero readers (or writers), so a client that goes away
/// cannot make the container take SIGPIPE. Stdin stays open until ``closeStdin()`` (CloseIO).
///
/// With a terminal, the runtime sends the PTY master over the console socket; the shim copies
/// stdin → master and master → stdout.
///
/// A `file:///path` stdout or stderr (`ctr run --log-uri file:///path`) is a file the output is
/// appended to, made with its directories if missing, as containerd's shim does. A
/// `binary:///path?arg=value` one is a logging program (``BinaryLogger``) that reads the
/// runtime's stdout and stderr pipes itself.
public final class ProcessIO: @unchecked Sendable {
    public let stdinPath: String
    public let stdoutPath: String
    public let stderrPath: String
    public let terminal: Bool

    private struct State {
        var childDescriptors: [Int32] = []
        var stdinKeeper: Int32 = -1
        var stdinWriter: Int32 = -1
        var console: Int32 = -1
        var activeOutputCopies = 0
        var closed = false
    }
    private let state = ConditionLock(State())
    private var consoleSocket: ConsoleSocket?
    private var pendingCopies: [(name: String, from: Int32, to: SharedDescriptor, isOutput: Bool, closesDestination: Bool)] = []
    /// What the runtime gets as its stdio (non-terminal only).
    public private(set) var runtimeStdio = RuntimeDriver.Stdio()

    /// Opens the FIFOs and makes the pipes or the console socket.
    ///
    /// - Parameters:
    ///   - id, namespace: the process's id (the container's, or the exec id) and namespace, for
    ///     a `binary://` logger.
    /// - Throws: `BerthError.unimplemented` for other stdio URIs, and for `binary://` with a
    ///   terminal; `BerthError.internal` when a FIFO, file or pipe cannot be opened or a logging
    ///   program does not start.
    public init(stdin: String, stdout: String, stderr: String, terminal: Bool,
                id: String = "", namespace: String = "") throws(BerthError) {
        stdinPath = stdin
        stdoutPath = stdout
        stderrPath = stderr
        self.terminal = terminal
        let logger = BinaryLogger(uri: stdout)
        for uri in [stdout, stderr] where uri.containsBytes("://") && filePath(uri) == nil && BinaryLogger(uri: uri) == nil {
            throw .unimplemented("stdio \(uri): berth-shim supports FIFOs, file:// and binary:// URIs")
        }
        if logger != nil && (terminal || stderr != stdout) {
            throw .unimplemented("stdio \(stdout): a binary:// logger takes stdout and stderr both, without a terminal")
        }
        do {
            try setUp(logger: logger, id: id, namespace: namespace)
        } catch {
            close()
            throw error
        }
    }

    private func setUp(logger: BinaryLogger?, id: String, namespace: String) throws(BerthError) {
        var stdinReader: Int32 = -1
        if !stdinPath.isEmpty {
            let keeper = try openFIFO(stdinPath, O_RDWR)
            state.update { $0.stdinKeeper = keeper }
            stdinReader = try openFIFO(stdinPath, O_RDONLY)
        }
        if terminal {
            consoleSocket = try ConsoleSocket()
            if stdinReader >= 0 {
                pendingCopies.append(("stdin", stdinReader, SharedDescriptor(-1), false, false))
            }
            return
        }
        if stdinReader >= 0 {
            let (read, write) = try makePipe()
            runtimeStdio.stdin = read
            state.update {
                $0.childDescriptors.append(read)
                $0.stdinWriter = write
            }
            pendingCopies.append(("stdin", stdinReader, SharedDescriptor(write), false, true))
        }
        if let logger {
            // The runtime writes straight into the logger's pipes; nothing to copy.
            let (stdout, stderr) = try logger.start(id: id, namespace: namespace)
            runtimeStdio.stdout = stdout
            runtimeStdio.stderr = stderr
            state.update { $0.childDescriptors += [stdout, stderr] }
            return
        }
        var stdoutFIFO: SharedDescriptor?
        var stderrFIFO: SharedDescriptor?
        if !stdoutPath.isEmpty { stdoutFIFO = SharedDescriptor(try openOutput(stdoutPath)) }
        if !stderrPath.isEmpty {
            stderrFIFO = stderrPath == stdoutPath ? stdoutFIFO : SharedDescriptor(try openOutput(stderrPath))
        }
        for (index, fifo) in [stdoutFIFO, stderrFIFO].enumerated() {
            guard let fifo else { continue }
            let (read, write) = try makePipe()
            if index == 0 { runtimeStdio.stdout = write } else { runtimeStdio.stderr = write }
            state.update { $0.childDescriptors.append(write) }
            fifo.retain()
            pendingCopies.append((index == 0 ? "stdout" : "stderr", read, fifo, true, true))
        }
        stdoutFIFO?.release()
        if stderrFIFO !== stdoutFIFO { stderrFIFO?.release() }
    }

    /// The console socket path for `--console-socket`, when a terminal was asked for.
    public var consoleSocketPath: String? { consoleSocket?.path }

    /// Call after the runtime command ran (whether or not it succeeded): closes this process's
    /// copies of the child's pipe ends, receives the PTY master (terminal), starts copying.
    ///
    /// - Throws: `BerthError.internal` when the runtime sent no console.
    public func runtimeStarted(succeeded: Bool) throws(BerthError) {
        let childEnds = state.update { state -> [Int32] in
            defer { state.childDescriptors = [] }
            return state.childDescriptors
        }
        for fd in childEnds { Glibc.close(fd) }
        guard succeeded else { return }
        if let consoleSocket {
            let master = try consoleSocket.receiveMaster()
            self.consoleSocket = nil
            state.update { $0.console = master }
            var copies = pendingCopies
            pendingCopies = []
            if let stdin = copies.first {
                copies = [(stdin.name, stdin.from, SharedDescriptor(dup(master)), false, true)]
            }
            if !stdoutPath.isEmpty {
                let fifo = try openOutput(stdoutPath)
                copies.append(("console", dup(master), SharedDescriptor(fifo), true, true))
            }
            pendingCopies = copies
        }
        for copy in pendingCopies { startCopy(copy) }
        pendingCopies = []
    }

    private func startCopy(_ copy: (name: String, from: Int32, to: SharedDescriptor, isOutput: Bool, closesDestination: Bool)) {
        if copy.isOutput { state.update { $0.activeOutputCopies += 1 } }
        let copyBody: @Sendable () -> Void = { [state] in
            // Not zero-filled: a page of it becomes resident only once a read reaches it.
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 32 * 1024, alignment: 16)
            defer { buffer.deallocate() }
            while true {
                let n = read(copy.from, buffer.baseAddress, buffer.count)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                if !writeAll(copy.to.fd, UnsafeRawBufferPointer(rebasing: buffer[0..<n])) && !copy.isOutput { break }
            }
            Glibc.close(copy.from)
            if copy.closesDestination { copy.to.release() }
            if copy.isOutput { state.update { $0.activeOutputCopies -= 1 } }
        }
        do {
            try startThread(name: "io-\(copy.name)", copyBody)
        } catch {
            Glibc.close(copy.from)
            if copy.closesDestination { copy.to.release() }
            if copy.isOutput { state.update { $0.activeOutputCopies -= 1 } }
        }
    }

    /// CloseIO: lets stdin reach end of file once the client's writer closes too.
    public func closeStdin() {
        let keeper = state.update { state -> Int32 in
            defer { state.stdinKeeper = -1 }
            return state.stdinKeeper
        }
        if keeper >= 0 { Glibc.close(keeper) }
    }

    /// Waits until stdout and stderr were copied to end of file (the process and everything that
    /// inherited its output closed it), at most `timeout`.
    public func waitForOutput(timeout: Duration) {
        _ = state.wait(until: .now + timeout) { $0.activeOutputCopies == 0 ? true : nil }
    }

    /// Sets the terminal's window size.
    ///
    /// - Throws: `BerthError.failedPrecondition` without a terminal.
    public func resize(width: UInt32, height: UInt32) throws(BerthError) {
        let console = state.update { $0.console }
        // Without a terminal there is nothing to resize: a no-op, as in containerd's shim.
        guard console >= 0 else { return }
        guard cberth_set_winsize(console, UInt16(clamping: height), UInt16(clamping: width)) == 0 else {
            throw errnoError("resize terminal")
        }
    }

    /// Closes what is left: the stdin keeper, the console, the child ends.
    public func close() {
        let fds = state.update { state -> [Int32] in
            guard !state.closed else { return [] }
            state.closed = true
            defer { state.childDescriptors = []; state.stdinKeeper = -1; state.console = -1 }
            return state.childDescriptors + [state.stdinKeeper, state.console]
        }
        for fd in fds where fd >= 0 { Glibc.close(fd) }
        for copy in pendingCopies {
            Glibc.close(copy.from)
            if copy.closesDestination { copy.to.release() }
        }
        pendingCopies = []
        consoleSocket = nil
    }
}

/// A descriptor shared by copy threads (stdout and stderr going to one FIFO), closed with the
/// last release.
final class SharedDescriptor: @unchecked Sendable {
    let fd: Int32
    private let count: ConditionLock<Int>
    init(_ fd: Int32) {
        self.fd = fd
        count = ConditionLock(1)
    }
    func retain() { count.update { $0 += 1 } }
    func release() {
        let last = count.update { count -> Bool in
            count -= 1
            return count == 0
        }
        if last && fd >= 0 { close(fd) }
    }
}

private func openFIFO(_ path: String, _ mode: Int32) throws(BerthError) -> Int32 {
    // O_RDWR never blocks on a FIFO; a read-only open is made non-blocking and then switched
    // back, so it cannot wait for a writer.
    let fd = open(path, mode | O_CLOEXEC | (mode == O_RDONLY ? O_NONBLOCK : 0))
    guard fd >= 0 else { throw errnoError("open fifo \(path)") }
    if mode == O_RDONLY { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) }
    return fd
}

/// The file a `file:///path` stdio URI names, or nil for anything else.
private func filePath(_ uri: String) -> String? {
    let scheme = "file://"
    guard uri.utf8.starts(with: scheme.utf8) else { return nil }
    let path = String(uri.utf8.dropFirst(scheme.utf8.count))!
    return path.utf8.first == UInt8(ascii: "/") ? path : nil
}

/// Where output goes: a FIFO (opened read-write), or the file of a `file://` URI, appended to.
private func openOutput(_ uri: String) throws(BerthError) -> Int32 {
    guard let path = filePath(uri) else { return try openFIFO(uri, O_RDWR) }
    try FileSystem.makeDirectories(FileSystem.parentDirectory(of: path))
    let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw errnoError("open log file \(path)") }
    return fd
}

func makePipe() throws(BerthError) -> (read: Int32, write: Int32) {
    var fds: [Int32] = [-1, -1]
    guard pipe2(&fds, O_CLOEXEC) == 0 else { throw errnoError("pipe") }
    return (fds[0], fds[1])
}

/// The temporary unix socket runc sends a PTY master to (`--console-socket`).
final class ConsoleSocket: @unchecked Sendable {
    let directory: String
    let path: String
    private let fd: Int32

    init() throws(BerthError) {
        var template = Array("/tmp/pty-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw errnoError("console socket directory")
        }
        directory = String(cString: made)
        path = directory + "/pty.sock"
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw errnoError("console socket") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.enumerated() where index < raw.count - 1 { raw[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0, listen(fd, 1) == 0 else {
            let error = errnoError("console socket \(path)")
            Glibc.close(fd)
            rmdir(directory)
            throw error
        }
    }

    deinit {
        Glibc.close(fd)
        unlink(path)
        rmdir(directory)
    }

    /// Accepts the runtime's connection (it connected during `create`/`exec`) and receives the
    /// master descriptor.
    func receiveMaster() throws(BerthError) -> Int32 {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, 10_000) == 1 else { throw .internal("console socket: the runtime sent no terminal") }
        let connection = cberth_accept4(fd, Int32(SOCK_CLOEXEC.rawValue))
        guard connection >= 0 else { throw errnoError("console socket accept") }
        defer { Glibc.close(connection) }
        let master = cberth_recv_fd(connection)
        guard master >= 0 else { throw errnoError("console socket: receive terminal") }
        return master
    }
}
