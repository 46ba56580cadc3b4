#if canImport(Glibc)
import Glibc
#endif
import BerthCore

/// An exclusive `flock` on a file, held until the value is released or the process exits.
///
/// Used to make a second daemon on the same root fail fast instead of sharing its files.
public final class FileLock: Sendable {
    public let path: String
    private let fd: Int32

    /// Takes the lock without waiting; throws `unavailable` if another process holds it.
    public init(path: String) throws(BerthError) {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw errnoError("open lock file \(path)") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let code = errno
            close(fd)
            if code == EWOULDBLOCK {
                throw .unavailable("\(path) is locked by another process")
            }
            throw errnoError("lock \(path)", errno: code)
        }
        self.path = path
        self.fd = fd
    }

    deinit { close(fd) }
}
