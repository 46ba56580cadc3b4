#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import BerthCore
import BerthSystem
import CBerthSystem

// Small synchronous helpers over raw syscalls, shared by the applier, the differ and FileTree.
// File names are byte arrays throughout: tar names and directory entries need not be UTF-8.

/// Calls `body` with `bytes` as a NUL-terminated C string, built on the stack.
@inline(__always)
func withCString<R>(_ bytes: some Collection<UInt8>, _ body: (UnsafePointer<CChar>) throws(BerthError) -> R) throws(BerthError) -> R {
    let count = bytes.count
    return try withUnsafeTemporaryAllocation(of: CChar.self, capacity: count + 1) { buffer throws(BerthError) -> R in
        var index = 0
        for byte in bytes {
            buffer[index] = CChar(bitPattern: byte)
            index += 1
        }
        buffer[count] = 0
        return try body(UnsafePointer(buffer.baseAddress!))
    }
}

/// The non-throwing form of ``withCString(_:_:)``.
@inline(__always)
func withCStringNoThrow<R>(_ bytes: some Collection<UInt8>, _ body: (UnsafePointer<CChar>) -> R) -> R {
    let count = bytes.count
    return withUnsafeTemporaryAllocation(of: CChar.self, capacity: count + 1) { buffer in
        var index = 0
        for byte in bytes {
            buffer[index] = CChar(bitPattern: byte)
            index += 1
        }
        buffer[count] = 0
        return body(UnsafePointer(buffer.baseAddress!))
    }
}

/// `/proc/self/fd/<dirfd>/<name>` (`<dirfd>` itself, which must be a directory, for an empty name): names `name` inside the directory open as `dirfd` for the path-only
/// xattr calls (`lsetxattr`, `llistxattr`), which do not follow the final component.
func procPath(_ dirfd: Int32, _ name: some Collection<UInt8>) -> [UInt8] {
    // With no name, "/proc/self/fd/N/." names the directory itself; the bare magic link would make the
    // l*xattr calls act on the link.
    var path = Array("/proc/self/fd/\(dirfd)/".utf8)
    if name.isEmpty { path.append(UInt8(ascii: ".")) } else { path.append(contentsOf: name) }
    return path
}

/// Renders a byte name for messages.
func display(_ bytes: some Collection<UInt8>) -> String { String(decoding: bytes, as: UTF8.self) }

/// The text of an errno value.
func errnoText(_ code: Int32) -> String { String(cString: strerror(code)) }

/// `open`/`openat` that retries on EINTR; returns -1 with errno set on failure.
@inline(__always)
func openAt(_ dirfd: Int32, _ name: UnsafePointer<CChar>, _ flags: Int32, _ mode: mode_t = 0) -> Int32 {
    while true {
        let fd = openat(dirfd, name, flags, mode)
        if fd >= 0 || errno != EINTR { return fd }
    }
}

/// Resolves `path` below `rootfd` as if `rootfd` were `/` (symlinks and `..` stay inside), opening the result
/// with `flags`. Retries EAGAIN/EINTR, which openat2 returns when a concurrent rename raced the lookup.
func openInRoot(_ rootfd: Int32, _ path: UnsafePointer<CChar>, flags: Int32) -> Int32 {
    let resolve = CBERTH_RESOLVE_IN_ROOT | CBERTH_RESOLVE_NO_MAGICLINKS
    var attempts = 0
    while true {
        let fd = cberth_openat2(rootfd, path, UInt64(UInt32(bitPattern: flags | O_CLOEXEC)), 0, resolve)
        if fd >= 0 { return fd }
        let code = errno
        if (code == EAGAIN || code == EINTR) && attempts < 64 {
            attempts += 1
            continue
        }
        errno = code
        return -1
    }
}

/// `fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW)`; nil with errno set on failure.
func lstatAt(_ dirfd: Int32, _ name: UnsafePointer<CChar>) -> stat? {
    var st = stat()
    guard fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { return nil }
    return st
}

func fileType(_ mode: mode_t) -> mode_t { mode & S_IFMT }

/// Names in the directory open as `dirfd` (the fd stays open), without `.` and `..`, in readdir order.
func listDirectory(_ dirfd: Int32) throws(BerthError) -> [[UInt8]] {
    let fd = openAt(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard fd >= 0 else { throw errnoError("open directory") }
    guard let dir = fdopendir(fd) else {
        let code = errno
        close(fd)
        throw errnoError("fdopendir", errno: code)
    }
    defer { closedir(dir) }
    var names: [[UInt8]] = []
    while true {
        errno = 0
        guard let entry = readdir(dir) else {
            if errno != 0 { throw errnoError("readdir") }
            return names
        }
        let name: [UInt8] = withUnsafePointer(to: &entry.pointee.d_name) { pointer in
            pointer.withMemoryRebound(to: UInt8.self, capacity: 256) { bytes in
                let length = strlen(UnsafeRawPointer(bytes).assumingMemoryBound(to: CChar.self))
                return Array(UnsafeBufferPointer(start: bytes, count: length))
            }
        }
        if name == [0x2E] || name == [0x2E, 0x2E] { continue }
        names.append(name)
    }
}

/// Removes `name` inside `dirfd` and, if it is a directory, everything below it, never following symlinks.
/// Directories it cannot write into are made writable first. A missing entry is not an error.
func removeAllAt(_ dirfd: Int32, _ name: [UInt8]) throws(BerthError) {
    try withCString(name) { cname throws(BerthError) in
        if unlinkat(dirfd, cname, 0) == 0 { return }
        var code = errno
        if code == ENOENT { return }
        guard code == EISDIR || code == EPERM || code == EACCES else {
            throw errnoError("remove \(display(name))", errno: code)
        }
        if code != EISDIR {
            // EPERM from unlink also means "is a directory" on Linux; anything else is a real refusal.
            guard let st = lstatAt(dirfd, cname), fileType(st.st_mode) == S_IFDIR else {
                throw errnoError("remove \(display(name))", errno: code)
            }
        }
        var fd = openAt(dirfd, cname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        if fd < 0 && errno == EACCES {
            // Make it readable through an O_PATH fd that cannot be a symlink swapped in meanwhile
            // (fchmodat by name would follow one).
            let pathfd = openAt(dirfd, cname, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if pathfd >= 0 {
                _ = withCStringNoThrow(Array("/proc/self/fd/\(pathfd)".utf8)) { chmod($0, 0o700) }
                close(pathfd)
            }
            fd = openAt(dirfd, cname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        }
        guard fd >= 0 else {
            code = errno
            if code == ENOENT { return }
            throw errnoError("open \(display(name))", errno: code)
        }
        defer { close(fd) }
        var madeWritable = false
        for child in try listDirectory(fd) {
            do throws(BerthError) {
                try removeAllAt(fd, child)
            } catch where !madeWritable && (error.code == .permissionDenied) {
                madeWritable = true
                _ = fchmod(fd, 0o700)
                try removeAllAt(fd, child)
            }
        }
        if unlinkat(dirfd, cname, AT_REMOVEDIR) != 0 {
            code = errno
            if code == ENOENT { return }
            throw errnoError("remove directory \(display(name))", errno: code)
        }
    }
}

/// Extended attributes of the entry at `path` (not following a final symlink), sorted by name, keeping only
/// names that `keep` accepts. Filesystems without xattr support give an empty list.
func readXattrs(_ path: [UInt8], keep: (String) -> Bool) throws(BerthError) -> [(name: String, value: [UInt8])] {
    try withCString(path) { cpath throws(BerthError) in
        var size = llistxattr(cpath, nil, 0)
        if size < 0 {
            if errno == ENOTSUP || errno == ENODATA { return [] }
            throw errnoError("list xattrs of \(display(path))")
        }
        if size == 0 { return [] }
        var names = [CChar](repeating: 0, count: size)
        while true {
            size = names.withUnsafeMutableBufferPointer { llistxattr(cpath, $0.baseAddress, $0.count) }
            if size >= 0 { break }
            guard errno == ERANGE else { throw errnoError("list xattrs of \(display(path))") }
            names = [CChar](repeating: 0, count: names.count * 2)
        }
        var result: [(name: String, value: [UInt8])] = []
        var start = 0
        for index in 0..<size where names[index] == 0 {
            let name = names[start..<index].withUnsafeBufferPointer {
                String(decoding: UnsafeRawBufferPointer($0), as: UTF8.self)
            }
            start = index + 1
            guard !name.isEmpty, keep(name) else { continue }
            var value = [UInt8](repeating: 0, count: 256)
            var missing = false
            while true {
                let n = value.withUnsafeMutableBytes { lgetxattr(cpath, name, $0.baseAddress, $0.count) }
                if n >= 0 { value.removeSubrange(n...); break }
                if errno == ENODATA { missing = true; break }
                guard errno == ERANGE else { throw errnoError("get xattr \(name) of \(display(path))") }
                let needed = lgetxattr(cpath, name, nil, 0)
                value = [UInt8](repeating: 0, count: max(Int(needed), value.count * 2))
            }
            if missing { continue }
            result.append((name, value))
        }
        result.sort { $0.name < $1.name }
        return result
    }
}

/// The xattr namespaces Berth carries in layers and copies: `security.*`, `trusted.*` (but not overlayfs's
/// own `trusted.overlay.*` bookkeeping) and `user.*`.
func isPortableXattr(_ name: String) -> Bool {
    if name.hasPrefix("trusted.overlay.") { return false }
    return name.hasPrefix("security.") || name.hasPrefix("trusted.") || name.hasPrefix("user.")
}

/// The process umask, read without changing it (other threads may be creating files).
func currentUmask() -> mode_t {
    guard let text = try? FileSystem.readString("/proc/self/status") else { return 0o777 }
    for line in text.split(separator: "\n") where line.hasPrefix("Umask:") {
        let value = line.dropFirst(6).trimmingPrefix(while: { $0 == " " || $0 == "\t" })
        if let mask = UInt32(value, radix: 8) { return mode_t(mask) }
    }
    return 0o777
}

/// `readlink` of `name` inside `dirfd`.
func readLinkAt(_ dirfd: Int32, _ name: UnsafePointer<CChar>) throws(BerthError) -> [UInt8] {
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = buffer.withUnsafeMutableBytes { readlinkat(dirfd, name, $0.baseAddress!.assumingMemoryBound(to: CChar.self), $0.count) }
        if n < 0 { throw errnoError("readlink \(String(cString: name))") }
        if n < buffer.count { return Array(buffer[0..<n]) }
        buffer = [UInt8](repeating: 0, count: buffer.count * 4)
    }
}

// MARK: Declarations Swift's Glibc module leaves out

/// `O_PATH` (needs `_GNU_SOURCE`, so the Glibc module does not export it); the same value on every Linux
/// architecture Berth builds for.
let O_PATH: Int32 = 0o10000000

// The xattr calls (<sys/xattr.h>) come from CBerthSystem, which includes that header.
