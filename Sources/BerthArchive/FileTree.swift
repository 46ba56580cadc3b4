#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import BerthCore
import BerthSystem
import CBerthSystem

/// Whole-tree operations for snapshotters: copy, disk usage and removal. None of them follows a symlink
/// found in the tree.
public enum FileTree {
    /// Copies the tree at `source` into the existing, empty directory `destination`: regular files,
    /// directories, symlinks (as links, never followed), hard links (kept as links within the copy), device
    /// nodes and fifos; sockets are skipped. Modes (with setuid/setgid/sticky), owners, times (directories'
    /// after their contents, `destination`'s own included) and xattrs in the `security.`, `trusted.` and
    /// `user.` namespaces are copied. Used by the native snapshotter to prepare a child from its parent.
    ///
    /// - Throws: `BerthError` `.notFound` if either directory is missing, `.resourceExhausted` when the
    ///   destination's disk is full, `.permissionDenied` when not allowed to set owners or xattrs, other codes
    ///   for system errors. A failed copy leaves a partial tree for the caller to remove.
    public static func copy(from source: String, to destination: String) throws(BerthError) {
        let sourcefd = open(source, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard sourcefd >= 0 else { throw errnoError("copy tree: open \(source)") }
        defer { close(sourcefd) }
        let destinationfd = open(destination, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard destinationfd >= 0 else { throw errnoError("copy tree: open \(destination)") }
        defer { close(destinationfd) }
        var rootStat = stat()
        guard fstat(sourcefd, &rootStat) == 0 else { throw errnoError("copy tree: stat \(source)") }
        let copier = TreeCopier(destinationRoot: destinationfd)
        try copier.copyDirectory(sourcefd, destinationfd, path: [])
        try copier.copyAttributes(from: sourcefd, procPath(sourcefd, []), rootStat, to: destinationfd, label: destination)
    }

    /// containerd's snapshot usage for the tree at `path`: the sum of `st_blocks * 512` and the count of
    /// distinct inodes (each hard-linked inode counted once), the directory itself included.
    ///
    /// - Throws: `BerthError` `.notFound` if `path` does not exist, other codes for system errors.
    public static func usage(of path: String) throws(BerthError) -> (size: Int64, inodes: Int64) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw errnoError("usage: open \(path)") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw errnoError("usage: stat \(path)") }
        var seen: Set<InodeID> = [InodeID(st)]
        var size = Int64(st.st_blocks) * 512
        try usage(fd, seen: &seen, size: &size)
        return (size, Int64(seen.count))
    }

    private struct InodeID: Hashable {
        var device: UInt64
        var inode: UInt64
        init(_ st: stat) {
            device = UInt64(st.st_dev)
            inode = UInt64(st.st_ino)
        }
    }

    private static func usage(_ dirfd: Int32, seen: inout Set<InodeID>, size: inout Int64) throws(BerthError) {
        for name in try listDirectory(dirfd) {
            guard let st = withCStringNoThrow(name, { lstatAt(dirfd, $0) }) else {
                if errno == ENOENT { continue }
                throw errnoError("usage: stat \(display(name))")
            }
            if seen.insert(InodeID(st)).inserted { size += Int64(st.st_blocks) * 512 }
            if fileType(st.st_mode) == S_IFDIR {
                let child = withCStringNoThrow(name) { openAt(dirfd, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
                guard child >= 0 else {
                    if errno == ENOENT { continue }
                    throw errnoError("usage: open \(display(name))")
                }
                defer { close(child) }
                try usage(child, seen: &seen, size: &size)
            }
        }
    }

    /// Removes `path` and everything below it without following symlinks (a symlink is removed, not its
    /// target), making directories writable where that is needed to empty them. A missing path is not an
    /// error.
    ///
    /// - Throws: `BerthError` `.invalidArgument` for an empty path or `/`, other codes (e.g.
    ///   `.permissionDenied`, `.internal` for a mount point in use) when something cannot be removed.
    public static func removeTree(_ path: String) throws(BerthError) {
        var trimmed = path
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed.removeLast() }
        guard !trimmed.isEmpty, trimmed != "/" else { throw .invalidArgument("remove tree: refusing to remove \(quoted(path))") }
        let parent = FileSystem.parentDirectory(of: trimmed)
        let name = Array(trimmed.utf8.split(separator: UInt8(ascii: "/")).last ?? [])
        guard name != [0x2E], name != [0x2E, 0x2E] else { throw .invalidArgument("remove tree: invalid path \(quoted(path))") }
        let parentfd = open(parent, O_PATH | O_DIRECTORY | O_CLOEXEC)
        guard parentfd >= 0 else {
            if errno == ENOENT || errno == ENOTDIR { return }
            throw errnoError("remove tree: open \(parent)")
        }
        defer { close(parentfd) }
        try removeAllAt(parentfd, name)
    }
}

private struct LinkKey: Hashable {
    var device: UInt64
    var inode: UInt64
}

private final class TreeCopier {
    let destinationRoot: Int32
    /// Source inode (hard-linked) → its first copy's path below the destination root.
    var links: [LinkKey: [UInt8]] = [:]
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)

    init(destinationRoot: Int32) { self.destinationRoot = destinationRoot }
    deinit { buffer.deallocate() }

    func copyDirectory(_ source: Int32, _ destination: Int32, path: [UInt8]) throws(BerthError) {
        for name in try listDirectory(source).sorted(by: { $0.lexicographicallyPrecedes($1) }) {
            let childPath = EntryPath.join(path, name)
            let label = display(childPath)
            try withCString(name) { cname throws(BerthError) in
                guard let st = lstatAt(source, cname) else {
                    if errno == ENOENT { return }
                    throw errnoError("copy tree: stat \(label)")
                }
                let type = fileType(st.st_mode)
                if type == S_IFSOCK { return }
                if type != S_IFDIR && st.st_nlink > 1 {
                    let key = LinkKey(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
                    if let first = links[key] {
                        let status = withCStringNoThrow(first) { linkat(destinationRoot, $0, destination, cname, 0) }
                        guard status == 0 else { throw errnoError("copy tree: link \(label)") }
                        return
                    }
                    links[key] = childPath
                }
                let sourceProc = procPath(source, name)
                switch type {
                case S_IFDIR:
                    guard mkdirat(destination, cname, 0o700) == 0 else { throw errnoError("copy tree: mkdir \(label)") }
                    let from = openAt(source, cname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                    guard from >= 0 else { throw errnoError("copy tree: open \(label)") }
                    defer { close(from) }
                    let to = openAt(destination, cname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                    guard to >= 0 else { throw errnoError("copy tree: open \(label)") }
                    defer { close(to) }
                    try copyDirectory(from, to, path: childPath)
                    try copyAttributes(from: from, sourceProc, st, to: to, label: label)
                case S_IFREG:
                    let from = openAt(source, cname, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
                    guard from >= 0 else { throw errnoError("copy tree: open \(label)") }
                    defer { close(from) }
                    let to = openAt(destination, cname, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0o600)
                    guard to >= 0 else { throw errnoError("copy tree: create \(label)") }
                    defer { close(to) }
                    try copyData(from, to, label: label)
                    try copyAttributes(from: from, sourceProc, st, to: to, label: label)
                case S_IFLNK:
                    let target = try readLinkAt(source, cname)
                    let status = withCStringNoThrow(target) { symlinkat($0, destination, cname) }
                    guard status == 0 else { throw errnoError("copy tree: symlink \(label)") }
                    try copyAttributes(sourceProc, st, toEntry: destination, name, label: label)
                default:
                    guard mknodat(destination, cname, st.st_mode & (S_IFMT | 0o777), st.st_rdev) == 0 else {
                        throw errnoError("copy tree: mknod \(label)")
                    }
                    try copyAttributes(sourceProc, st, toEntry: destination, name, label: label)
                }
            }
        }
    }

    private func copyData(_ from: Int32, _ to: Int32, label: String) throws(BerthError) {
        while true {
            let n = read(from, buffer.baseAddress, buffer.count)
            if n < 0 {
                if errno == EINTR { continue }
                throw errnoError("copy tree: read \(label)")
            }
            if n == 0 { return }
            do throws(BerthError) {
                try FileSystem.writeAll(fd: to, UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            } catch {
                throw BerthError(error.code, "copy tree: write \(label): \(error.message)")
            }
        }
    }

    private func copyXattrs(_ sourceProc: [UInt8], label: String, set: (String, [UInt8]) -> Int32) throws(BerthError) {
        for (name, value) in try readXattrs(sourceProc, keep: isPortableXattr) where set(name, value) != 0 {
            let code = errno
            if code == ENOTSUP { continue }
            throw errnoError("copy tree: set xattr \(name) on \(label)", errno: code)
        }
    }

    /// Owner, xattrs, mode and times for an open file or directory.
    func copyAttributes(from _: Int32, _ sourceProc: [UInt8], _ st: stat, to fd: Int32, label: String) throws(BerthError) {
        guard fchown(fd, st.st_uid, st.st_gid) == 0 else { throw errnoError("copy tree: chown \(label)") }
        try copyXattrs(sourceProc, label: label) { name, value in
            value.withUnsafeBytes { fsetxattr(fd, name, $0.baseAddress, $0.count, 0) }
        }
        guard fchmod(fd, st.st_mode & 0o7777) == 0 else { throw errnoError("copy tree: chmod \(label)") }
        let status = withUnsafeTemporaryAllocation(of: timespec.self, capacity: 2) { pair in
            pair[0] = st.st_atim
            pair[1] = st.st_mtim
            return futimens(fd, pair.baseAddress)
        }
        guard status == 0 else { throw errnoError("copy tree: set times of \(label)") }
    }

    /// Owner, xattrs, mode (not for symlinks) and times for an entry by name, never following it.
    func copyAttributes(_ sourceProc: [UInt8], _ st: stat, toEntry dirfd: Int32, _ name: [UInt8], label: String) throws(BerthError) {
        try withCString(name) { cname throws(BerthError) in
            guard fchownat(dirfd, cname, st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) == 0 else {
                throw errnoError("copy tree: chown \(label)")
            }
            let isSymlink = fileType(st.st_mode) == S_IFLNK
            let destinationProc = procPath(dirfd, name)
            try withCString(destinationProc) { path throws(BerthError) in
                for (key, value) in try readXattrs(sourceProc, keep: isPortableXattr) {
                    if value.withUnsafeBytes({ lsetxattr(path, key, $0.baseAddress, $0.count, 0) }) != 0 {
                        let code = errno
                        // user.* cannot be set on symlinks and devices; such a source cannot hold them either.
                        if code == ENOTSUP || (code == EPERM && key.hasPrefix("user.")) { continue }
                        throw errnoError("copy tree: set xattr \(key) on \(label)", errno: code)
                    }
                }
            }
            if !isSymlink {
                guard fchmodat(dirfd, cname, st.st_mode & 0o7777, AT_SYMLINK_NOFOLLOW) == 0 else {
                    throw errnoError("copy tree: chmod \(label)")
                }
            }
            let status = withUnsafeTemporaryAllocation(of: timespec.self, capacity: 2) { pair in
                pair[0] = st.st_atim
                pair[1] = st.st_mtim
                return utimensat(dirfd, cname, pair.baseAddress, AT_SYMLINK_NOFOLLOW)
            }
            guard status == 0 else { throw errnoError("copy tree: set times of \(label)") }
        }
    }
}
