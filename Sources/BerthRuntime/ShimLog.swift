#if canImport(Glibc)
import Glibc
#endif
import BerthCore
import BerthSystem
import CBerthSystem
import Logging
import Synchronization

/// The `log` FIFO in a bundle, which the shim opens as its stderr: berthd holds it open
/// read-write (so the shim's open never waits and the pipe never loses its reader while berthd
/// runs) and copies each line into its own log, as containerd's `openShimLog` does.
///
/// A containerd shim exits at once when the FIFO is missing, and one whose FIFO nobody drains
/// blocks as soon as the pipe is full; so the FIFO exists before `start`, and is drained again
/// after a restart. Every FIFO is drained by one thread (``ShimLogDrain``), not one per shim.
final class ShimLog: Sendable {
    private let fd: Int32
    private let drain: ShimLogDrain

    /// Creates the FIFO at `path` if missing (mode 0700) and starts draining it.
    ///
    /// - Throws: `internal` when the FIFO cannot be made or opened, `resourceExhausted` when the
    ///   draining thread cannot be started.
    init(path: String, logger: Logger, namespace: String, id: String, drain: ShimLogDrain = .shared) throws(BerthError) {
        if mkfifo(path, 0o700) != 0 && errno != EEXIST {
            throw errnoError("mkfifo \(path)")
        }
        let fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw errnoError("open \(path)") }
        do {
            try drain.add(fd: fd, source: ShimLogDrain.Source(logger: logger, namespace: namespace, id: id))
        } catch {
            close(fd)
            throw error
        }
        self.fd = fd
        self.drain = drain
    }

    /// Stops draining; the drain copies what is already buffered, then closes the FIFO.
    func stop() {
        drain.remove(fd: fd)
    }
}

/// The thread that copies the lines of every shim's log FIFO into berthd's log. It sleeps in
/// poll(2) until a FIFO has data or the set of FIFOs changes (a byte on its wake pipe), so an idle
/// node with many containers costs one sleeping thread and no wake-ups.
final class ShimLogDrain: Sendable {
    static let shared = ShimLogDrain()

    /// Whose log a FIFO carries.
    struct Source: Sendable {
        let logger: Logger
        let namespace: String
        let id: String
    }

    private struct State {
        var sources: [Int32: Source] = [:]
        /// Removed FIFOs, which the thread drains one last time and closes.
        var retired: [Int32] = []
        /// The wake pipe (read end, write end), made with the thread.
        var wake: (Int32, Int32)?
    }

    /// Longest partial line kept before it is logged as it is.
    private static let maximumLine = 64 * 1024
    private let state = Mutex(State())

    /// Starts draining `fd` (the thread starts with the first FIFO).
    func add(fd: Int32, source: Source) throws(BerthError) {
        let wake = try state.withLock { state throws(BerthError) -> Int32 in
            if state.wake == nil { state.wake = try startThread() }
            state.sources[fd] = source
            return state.wake!.1
        }
        Self.poke(wake)
    }

    /// Stops draining `fd` and closes it (on the draining thread, after a last read).
    func remove(fd: Int32) {
        let wake = state.withLock { state -> Int32? in
            guard state.sources[fd] != nil else { return nil }
            state.retired.append(fd)
            return state.wake?.1
        }
        if let wake { Self.poke(wake) }
    }

    private func startThread() throws(BerthError) -> (Int32, Int32) {
        var fds: [Int32] = [-1, -1]
        guard cberth_pipe2(&fds, O_NONBLOCK | O_CLOEXEC) == 0 else { throw errnoError("shim log: pipe2") }
        let readEnd = fds[0]
        do {
            try spawnThread(name: "shim-log", stackSize: 256 * 1024) { [self] in run(wakeFD: readEnd) }
        } catch {
            close(fds[0])
            close(fds[1])
            throw error
        }
        return (fds[0], fds[1])
    }

    private static func poke(_ fd: Int32) {
        var byte: UInt8 = 1
        _ = write(fd, &byte, 1)
    }

    private func run(wakeFD: Int32) {
        var pending: [Int32: [UInt8]] = [:]
        var buffer = [UInt8](repeating: 0, count: 8192)
        while true {
            let (sources, retired) = state.withLock { state in
                let retired = state.retired.compactMap { fd in state.sources.removeValue(forKey: fd).map { (fd, $0) } }
                state.retired.removeAll()
                return (state.sources, retired)
            }
            for (fd, source) in retired {
                var lines = pending.removeValue(forKey: fd) ?? []
                while case let n = buffer.withUnsafeMutableBytes({ read(fd, $0.baseAddress, $0.count) }), n > 0 {
                    lines += buffer[0..<n]
                    Self.logLines(&lines, source)
                }
                if !lines.isEmpty { Self.log(String(decoding: lines, as: UTF8.self), source) }
                close(fd)
            }
            var polled = [pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]
            for fd in sources.keys { polled.append(pollfd(fd: fd, events: Int16(POLLIN), revents: 0)) }
            guard poll(&polled, nfds_t(polled.count), -1) > 0 else { continue }
            if polled[0].revents != 0 {
                while buffer.withUnsafeMutableBytes({ read(wakeFD, $0.baseAddress, $0.count) }) > 0 {}
            }
            for entry in polled.dropFirst() where entry.revents != 0 {
                guard let source = sources[entry.fd] else { continue }
                let n = buffer.withUnsafeMutableBytes { read(entry.fd, $0.baseAddress, $0.count) }
                guard n > 0 else { continue }
                var lines = pending[entry.fd] ?? []
                lines += buffer[0..<n]
                Self.logLines(&lines, source)
                pending[entry.fd] = lines
            }
        }
    }

    /// Logs each complete line of `bytes` and removes it; a partial line longer than
    /// ``maximumLine`` is logged as it is.
    private static func logLines(_ bytes: inout [UInt8], _ source: Source) {
        while let newline = bytes.firstIndex(of: UInt8(ascii: "\n")) {
            let line = String(decoding: bytes[..<newline], as: UTF8.self)
            bytes.removeSubrange(...newline)
            if !line.isEmpty { log(line, source) }
        }
        if bytes.count > maximumLine {
            log(String(decoding: bytes, as: UTF8.self), source)
            bytes.removeAll()
        }
    }

    private static func log(_ line: String, _ source: Source) {
        source.logger.info("shim: \(line)", metadata: ["namespace": "\(source.namespace)", "id": "\(source.id)"])
    }
}
