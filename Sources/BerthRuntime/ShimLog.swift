#if canImport(Glibc)
import Glibc
#endif
import BerthCore
import BerthSystem
import Foundation
import Logging
import Synchronization

/// The `log` FIFO in a bundle, which the shim opens as its stderr: berthd holds it open
/// read-write (so the shim's open never waits and the pipe never loses its reader while berthd
/// runs) and copies each line into its own log, as containerd's `openShimLog` does.
///
/// A containerd shim exits at once when the FIFO is missing, and one whose FIFO nobody drains
/// blocks as soon as the pipe is full; so the FIFO exists before `start`, and is drained again
/// after a restart.
final class ShimLog: Sendable {
    private let fd: Int32
    private let stopped = Atomic<Bool>(false)

    /// Creates the FIFO at `path` if missing (mode 0700) and starts draining it.
    ///
    /// - Throws: `internal` when the FIFO cannot be made or opened.
    init(path: String, logger: Logger, namespace: String, id: String) throws(BerthError) {
        if mkfifo(path, 0o700) != 0 && errno != EEXIST {
            throw errnoError("mkfifo \(path)")
        }
        let fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw errnoError("open \(path)") }
        self.fd = fd
        let thread = Thread { [self] in drain(logger: logger, namespace: namespace, id: id) }
        thread.name = "shim-log"
        thread.stackSize = 256 * 1024
        thread.start()
    }

    /// Stops draining and closes the FIFO (within half a second).
    func stop() {
        stopped.store(true, ordering: .releasing)
    }

    private func drain(logger: Logger, namespace: String, id: String) {
        defer { close(fd) }
        var pending: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 8192)
        while !stopped.load(ordering: .acquiring) {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, 500)
            guard ready > 0 else { continue }
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { continue }
            pending += buffer[0..<n]
            while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: pending[..<newline], as: UTF8.self)
                pending.removeSubrange(...newline)
                if !line.isEmpty {
                    logger.info("shim: \(line)", metadata: ["namespace": "\(namespace)", "id": "\(id)"])
                }
            }
            if pending.count > 64 * 1024 {
                logger.info("shim: \(String(decoding: pending, as: UTF8.self))", metadata: ["namespace": "\(namespace)", "id": "\(id)"])
                pending.removeAll()
            }
        }
    }
}
