#if canImport(Glibc)
import Glibc
#endif
import BerthCore
import BerthSystem
import Logging
import Synchronization

/// The `log` FIFO in a bundle, which the shim opens as its stderr: berthd holds it open
/// read-write (so the shim's open never waits and the pipe never loses its reader while berthd
/// runs) and copies each line into its own log, as containerd's `openShimLog` does.
///
/// A containerd shim exits at once when the FIFO is missing, and one whose FIFO nobody drains
/// blocks as soon as the pipe is full; so the FIFO exists before `start`, and is drained again
/// after a restart. Every FIFO is drained from one thread (``PollThread``), not one per shim.
final class ShimLog: Sendable {
    private let fd: Int32
    private let poller: PollThread
    private let lines: Lines
    private let stopped = Atomic(false)

    /// Creates the FIFO at `path` if missing (mode 0700) and starts draining it.
    ///
    /// - Throws: `internal` when the FIFO cannot be made or opened, `resourceExhausted` when the
    ///   draining thread cannot be started.
    init(path: String, logger: Logger, namespace: String, id: String, poller: PollThread = .shared) throws(BerthError) {
        if mkfifo(path, 0o700) != 0 && errno != EEXIST {
            throw errnoError("mkfifo \(path)")
        }
        let fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw errnoError("open \(path)") }
        let lines = Lines(logger: logger, namespace: namespace, id: id)
        do {
            try poller.watch(fd) { fd in
                lines.drain(fd)
                return .keep
            }
        } catch {
            close(fd)
            throw error
        }
        self.fd = fd
        self.poller = poller
        self.lines = lines
    }

    /// Stops draining; what is already buffered is still copied, then the FIFO is closed.
    /// Calls after the first do nothing.
    func stop() {
        guard !stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        poller.unwatch(fd) { [fd, lines] in
            lines.drain(fd)
            lines.flush()
            close(fd)
        }
    }

    /// Splits what the FIFO delivers into lines and logs each; used only on the poll thread.
    private final class Lines: Sendable {
        /// Longest partial line kept before it is logged as it is.
        private static let maximumLine = 64 * 1024
        private let logger: Logger
        private let namespace: String
        private let id: String
        private let partial = Mutex<[UInt8]>([])

        init(logger: Logger, namespace: String, id: String) {
            self.logger = logger
            self.namespace = namespace
            self.id = id
        }

        /// Reads everything the FIFO holds now and logs its complete lines.
        func drain(_ fd: Int32) {
            withUnsafeTemporaryAllocation(byteCount: 8192, alignment: 1) { buffer in
                while case let n = read(fd, buffer.baseAddress, buffer.count), n > 0 {
                    partial.withLock { $0 += buffer[..<n] }
                    logLines()
                }
            }
        }

        /// Logs a last line that has no newline.
        func flush() {
            let rest = partial.withLock { bytes in
                defer { bytes.removeAll() }
                return bytes
            }
            if !rest.isEmpty { log(String(decoding: rest, as: UTF8.self)) }
        }

        /// Logs each complete line and removes it; a partial line longer than ``maximumLine`` is
        /// logged as it is.
        private func logLines() {
            let complete = partial.withLock { bytes -> [String] in
                var lines: [String] = []
                while let newline = bytes.firstIndex(of: UInt8(ascii: "\n")) {
                    lines.append(String(decoding: bytes[..<newline], as: UTF8.self))
                    bytes.removeSubrange(...newline)
                }
                if bytes.count > Self.maximumLine {
                    lines.append(String(decoding: bytes, as: UTF8.self))
                    bytes.removeAll()
                }
                return lines
            }
            for line in complete where !line.isEmpty { log(line) }
        }

        private func log(_ line: String) {
            logger.info("shim: \(line)", metadata: ["namespace": "\(namespace)", "id": "\(id)"])
        }
    }
}
