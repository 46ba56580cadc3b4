import CBerthSystem
import Glibc

/// Linux functions that Swift's Glibc module hides behind `_GNU_SOURCE`, reached through
/// CBerthSystem's `syscall(2)` wrappers (no `dlsym`, so they also work in a static executable).
enum GNU {
    /// `accept4(2)`: accepts with `SOCK_CLOEXEC` in one step, so a shim that forks runc never leaks
    /// a connection into it.
    static func accept4(_ fd: Int32, flags: Int32) -> Int32 {
        cberth_accept4(fd, flags)
    }

    /// `pipe2(2)`.
    static func pipe2(_ fds: UnsafeMutablePointer<Int32>, flags: Int32) -> Int32 {
        cberth_pipe2(fds, flags)
    }

    /// Names the calling thread (`PR_SET_NAME`); Linux keeps the first 15 bytes.
    static func nameCurrentThread(_ name: String) {
        _ = cberth_set_thread_name(name)
    }

    /// `struct ucred` from `SO_PEERCRED`.
    struct PeerCredentials {
        var pid: pid_t = 0
        var uid: uid_t = 0
        var gid: gid_t = 0
    }
}
