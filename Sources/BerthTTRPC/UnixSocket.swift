import Glibc
import BerthCore
import BerthSystem

/// Thin unix-socket calls for ttrpc's client and server and berthd's gRPC listener. Descriptors
/// are close-on-exec; writes never raise SIGPIPE.
public enum UnixSocket {
    /// Where a socket lives: a file-system path, or a name in Linux's abstract namespace.
    enum Address: CustomStringConvertible {
        case path(String)
        case abstract(String)

        var description: String {
            switch self {
            case .path(let path): path
            case .abstract(let name): "@\(name)"
            }
        }
    }

    /// Connects a stream socket to `address`.
    ///
    /// - Throws: `BerthError.invalidArgument` for an address too long for `sockaddr_un`;
    ///   `BerthError.unavailable` when the connect fails (no such socket, refused).
    static func connect(to address: Address) throws(BerthError) -> Int32 {
        let fd = try makeSocket(address)
        let rc = withSocketAddress(try socketAddress(address)) { pointer, length in
            Glibc.connect(fd, pointer, length)
        }
        guard rc == 0 else {
            let code = errno
            Glibc.close(fd)
            throw .unavailable("socket \(address): connect: \(errnoText(code))")
        }
        return fd
    }

    /// Binds and listens on a socket file at `path`: creates missing parent directories (0711),
    /// replaces a stale socket that nobody answers on, and gives the socket `mode` (0600 for a
    /// shim's).
    ///
    /// - Throws: `BerthError.alreadyExists` when a live server already answers at `path` or `path`
    ///   is not a socket; `BerthError.invalidArgument` for a path too long; `BerthError.internal`
    ///   for other system errors.
    public static func listen(path: String, mode: mode_t = 0o600, backlog: Int32 = SOMAXCONN) throws(BerthError) -> Int32 {
        try makeParentDirectories(of: path)
        let address = try socketAddress(.path(path))
        var fd = try makeSocket(.path(path))
        var rc = withSocketAddress(address) { Glibc.bind(fd, $0, $1) }
        if rc != 0, errno == EADDRINUSE {
            Glibc.close(fd)
            try removeStaleSocket(at: path)
            fd = try makeSocket(.path(path))
            rc = withSocketAddress(address) { Glibc.bind(fd, $0, $1) }
        }
        guard rc == 0 else { throw failure(closing: fd, "bind \(path)") }
        guard Glibc.listen(fd, backlog) == 0 else { throw failure(closing: fd, "listen on \(path)") }
        guard chmod(path, mode) == 0 else { throw failure(closing: fd, "chmod \(path)") }
        return fd
    }

    /// The peer's uid and gid (`SO_PEERCRED`), or nil when the kernel does not say.
    static func peerCredentials(_ fd: Int32) -> (uid: uid_t, gid: gid_t)? {
        var credentials = GNU.PeerCredentials()
        var length = socklen_t(MemoryLayout<GNU.PeerCredentials>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0 else { return nil }
        return (credentials.uid, credentials.gid)
    }

    /// Writes all of `bytes`, retrying short writes and EINTR.
    ///
    /// - Returns: false when the connection is gone (EPIPE, ECONNRESET, shut down).
    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = send(fd, buffer.baseAddress! + offset, buffer.count - offset, Int32(MSG_NOSIGNAL))
                if written < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                offset += written
            }
            return true
        }
    }

    /// Reads what is available into `buffer`, retrying EINTR. Returns 0 at end of stream and on
    /// error: either way the connection is over.
    static func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        while true {
            let count = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if count < 0, errno == EINTR { continue }
            return max(count, 0)
        }
    }

    /// Wakes every thread blocked reading `fd` (they see end of stream) without closing it, so the
    /// descriptor number cannot be reused while another thread still writes to it.
    static func shutdown(_ fd: Int32) {
        _ = Glibc.shutdown(fd, Int32(SHUT_RDWR))
    }

    // MARK: - Helpers

    private static func makeSocket(_ address: Address) throws(BerthError) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .internal("socket \(address): socket: \(errnoText(errno))") }
        return fd
    }

    private static func socketAddress(_ address: Address) throws(BerthError) -> (sockaddr_un, socklen_t) {
        var storage = sockaddr_un()
        storage.sun_family = sa_family_t(AF_UNIX)
        let name: [UInt8]
        switch address {
        case .path(let path): name = Array(path.utf8)
        case .abstract(let abstract): name = [0] + Array(abstract.utf8)
        }
        let capacity = MemoryLayout.size(ofValue: storage.sun_path)
        guard !name.isEmpty, name.count < capacity else {
            throw .invalidArgument("socket \(address): address must be 1 to \(capacity - 1) bytes")
        }
        withUnsafeMutableBytes(of: &storage.sun_path) { $0.copyBytes(from: name) }
        let pathOffset = MemoryLayout<sockaddr_un>.offset(of: \.sun_path)!
        // Abstract names are exactly their bytes; paths carry a terminating NUL.
        let length: Int
        if case .abstract = address { length = pathOffset + name.count } else { length = pathOffset + name.count + 1 }
        return (storage, socklen_t(length))
    }

    private static func withSocketAddress<R>(_ address: (sockaddr_un, socklen_t), _ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        var storage = address.0
        return withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, address.1) }
        }
    }

    /// Removes the socket file at `path` when connecting to it is refused (its server died).
    private static func removeStaleSocket(at path: String) throws(BerthError) {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }  // gone already: bind again
        guard info.st_mode & S_IFMT == S_IFSOCK else {
            throw .alreadyExists("socket \(path): exists and is not a socket")
        }
        if let fd = try? connect(to: .path(path)) {
            Glibc.close(fd)
            throw .alreadyExists("socket \(path): a server is already listening")
        }
        guard unlink(path) == 0 || errno == ENOENT else {
            throw .internal("socket \(path): remove stale socket: \(errnoText(errno))")
        }
    }

    private static func makeParentDirectories(of path: String) throws(BerthError) {
        var prefix = ""
        let components = path.split(separator: "/", omittingEmptySubsequences: false).dropLast()
        for (index, component) in components.enumerated() {
            prefix += index == 0 ? String(component) : "/\(component)"
            guard !component.isEmpty, component != "." else { continue }
            if mkdir(prefix, 0o711) != 0, errno != EEXIST {
                throw .internal("socket \(path): create directory \(prefix): \(errnoText(errno))")
            }
        }
    }

    private static func failure(closing fd: Int32, _ what: String) -> BerthError {
        let code = errno
        Glibc.close(fd)
        return .internal("socket: \(what): \(errnoText(code))")
    }
}
