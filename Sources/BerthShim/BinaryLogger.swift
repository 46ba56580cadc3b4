import BerthCore
import Glibc

/// A logging program named by a `binary:///path?arg=value&flag` stdio URI, as containerd's
/// binary log driver runs it (nerdctl's logging uses it): the program gets the read ends of the
/// process's stdout and stderr pipes as descriptors 3 and 4 and the write end of a ready pipe as
/// descriptor 5, with `CONTAINER_ID` and `CONTAINER_NAMESPACE` in its environment; the query
/// becomes its arguments (`arg value flag`). The shim waits until the program writes to or
/// closes descriptor 5, then hands the pipes' write ends to the runtime. The program ends when
/// the process's output does; the shim, as subreaper, reaps it.
struct BinaryLogger: Equatable {
    let path: String
    let arguments: [String]

    /// How long a logger may take to say it is ready.
    static let readyTimeoutMilliseconds: Int32 = 10_000

    /// Parses `uri`; nil unless it is `binary://` with an absolute path.
    init?(uri: String) {
        let scheme = "binary://"
        guard uri.utf8.starts(with: scheme.utf8) else { return nil }
        let rest = String(uri.utf8.dropFirst(scheme.utf8.count))!
        let parts = rest.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let path = Self.percentDecoded(parts[0])
        guard path.utf8.first == UInt8(ascii: "/") else { return nil }
        var arguments: [String] = []
        if parts.count > 1 {
            for pair in parts[1].split(separator: "&") {
                let keyValue = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                arguments.append(Self.percentDecoded(keyValue[0]))
                if keyValue.count > 1, !keyValue[1].isEmpty { arguments.append(Self.percentDecoded(keyValue[1])) }
            }
        }
        self.path = path
        self.arguments = arguments
    }

    /// Starts the program and waits until it is ready.
    ///
    /// - Returns: the write ends of the stdout and stderr pipes, for the runtime.
    /// - Throws: `BerthError.internal` when a pipe cannot be made, the program cannot start, or
    ///   it neither writes to nor closes descriptor 5 within ``readyTimeoutMilliseconds`` (one that
    ///   exits closes it, and counts as ready, as with containerd).
    func start(id: String, namespace: String) throws(BerthError) -> (stdout: Int32, stderr: Int32) {
        let stdout = try makePipe()
        let stderr: (read: Int32, write: Int32)
        let ready: (read: Int32, write: Int32)
        do {
            stderr = try makePipe()
        } catch {
            closeAll(stdout.read, stdout.write)
            throw error
        }
        do {
            ready = try makePipe()
        } catch {
            closeAll(stdout.read, stdout.write, stderr.read, stderr.write)
            throw error
        }
        var spec = SpawnSpec(executable: path, arguments: [path] + arguments)
        spec.extraDescriptors = [(stdout.read, 3), (stderr.read, 4), (ready.write, 5)]
        spec.extraEnvironment = ["CONTAINER_ID=\(id)", "CONTAINER_NAMESPACE=\(namespace)"]
        let pid: pid_t
        do {
            pid = try Spawner.spawn(spec)
        } catch {
            closeAll(stdout.read, stdout.write, stderr.read, stderr.write, ready.read, ready.write)
            throw BerthError(.internal, "log binary \(path): \(error.message)")
        }
        closeAll(stdout.read, stderr.read, ready.write)
        // Ready: a byte, or end of file once the program (and every copy of descriptor 5) closed it.
        var entry = pollfd(fd: ready.read, events: Int16(POLLIN), revents: 0)
        var polled: Int32
        repeat { polled = poll(&entry, 1, Self.readyTimeoutMilliseconds) } while polled < 0 && errno == EINTR
        closeAll(ready.read)
        guard polled > 0 else {
            kill(pid, SIGKILL)
            closeAll(stdout.write, stderr.write)
            throw BerthError(.internal, "log binary \(path) did not get ready within \(Self.readyTimeoutMilliseconds / 1000) s")
        }
        return (stdout.write, stderr.write)
    }

    private static func percentDecoded(_ text: Substring) -> String {
        var bytes: [UInt8] = []
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            let high = iterator.next().flatMap(hexValue)
            let low = iterator.next().flatMap(hexValue)
            if let high, let low { bytes.append(high << 4 | low) }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

private func closeAll(_ fds: Int32...) {
    for fd in fds { close(fd) }
}
