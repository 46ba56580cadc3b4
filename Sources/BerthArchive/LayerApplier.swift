#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import BerthCore
import BerthSystem
import CBerthSystem

/// How ``LayerApplier/apply(from:compression:to:options:)`` treats the target and the layer's whiteouts.
public struct ApplyOptions: Sendable {
    /// What a whiteout entry becomes.
    public enum Whiteouts: Sendable {
        /// The target is an overlayfs upper directory: `.wh.NAME` becomes a 0/0 character device `NAME`, and
        /// `.wh..wh..opq` sets the xattr `trusted.overlay.opaque="y"` on its directory.
        case overlay
        /// The target is a full tree (native snapshotter): `.wh.NAME` removes `NAME` recursively, and
        /// `.wh..wh..opq` removes every entry of its directory that this layer did not itself create.
        case delete
    }

    /// What whiteouts become; see ``Whiteouts``.
    public var whiteouts: Whiteouts
    /// For `.overlay`: the lower directories the target overlays, topmost first. A parent directory that the
    /// layer does not list but that must be created in the upper directory gets the attributes (mode, owner,
    /// times, xattrs other than `trusted.*`) of the same directory in the topmost lower that has it, as
    /// containerd's `WithParents` does. A lower that has a non-directory there stops the search (0755 is used).
    public var lowerDirectories: [String]
    /// Polled between entries; returning false stops the apply with `BerthError` `.cancelled`.
    public var shouldContinue: @Sendable () -> Bool

    public init(whiteouts: Whiteouts, lowerDirectories: [String] = [], shouldContinue: @escaping @Sendable () -> Bool = { true }) {
        self.whiteouts = whiteouts
        self.lowerDirectories = lowerDirectories
        self.shouldContinue = shouldContinue
    }
}

/// What an apply read.
public struct ApplyResult: Sendable {
    /// sha256 of the uncompressed stream: the layer's diff ID.
    public var uncompressedDigest: Digest
    /// Bytes of uncompressed stream read (up to EOF).
    public var uncompressedSize: Int64
    /// Bytes read from the source descriptor.
    public var compressedSize: Int64

    public init(uncompressedDigest: Digest, uncompressedSize: Int64, compressedSize: Int64) {
        self.uncompressedDigest = uncompressedDigest
        self.uncompressedSize = uncompressedSize
        self.compressedSize = compressedSize
    }
}

/// Unpacks layer tars into directories, safely.
public enum LayerApplier {
    /// Reads a layer (a tar stream, compressed as `compression` says) sequentially from the open file
    /// descriptor `source` (not closed) and applies it to the existing directory `root`.
    ///
    /// An untrusted layer never writes, links, changes or removes anything outside `root`: every entry's
    /// parent is resolved with `openat2(RESOLVE_IN_ROOT)`, so symlinks in the tree resolve as if `root` were
    /// `/`, and the final component is acted on with `*at` calls that never follow it. A later entry replaces
    /// an earlier one at the same path; a directory over a directory keeps it and updates its attributes.
    /// Directory times are set after all entries. Decompression and hashing run on a second thread.
    ///
    /// - Returns: the sha256 of the uncompressed stream (the diff ID), computed over exactly the bytes read,
    ///   including the tar trailer and anything after it up to EOF, and the sizes read.
    /// - Throws: `BerthError` with code
    ///   - `.invalidArgument`, naming the entry, for unsafe or malformed entries: a name or hardlink target
    ///     that climbs out of the root with `..`, whiteouts naming `.`/`..`, a hardlink to a missing entry or
    ///     to a directory, oversized extension headers (over 1 MiB) or paths (over 4096 bytes), negative
    ///     sizes, unsupported entry types (GNU sparse files among them), a parent that is not a directory;
    ///   - `.dataLoss` for corrupt compressed data, a bad header checksum or a truncated archive;
    ///   - `.resourceExhausted` when the disk or quota is full ("no space left on device while writing ENTRY");
    ///   - `.cancelled` when `options.shouldContinue` returns false;
    ///   - `.notFound` if `root` does not exist; other codes for unexpected system errors.
    ///   The target may hold part of the layer after an error.
    public static func apply(from source: Int32, compression: LayerCompression, to root: String,
                             options: ApplyOptions) throws(BerthError) -> ApplyResult {
        let rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC)
        guard rootfd >= 0 else { throw errnoError("layer apply: open target \(root)") }
        defer { close(rootfd) }
        let applier = try Applier(rootfd: rootfd, options: options)
        let pipeline = LayerPipeline(source: source, compression: compression)
        try pipeline.start()
        var finished = false
        defer { if !finished { pipeline.cancel() } }
        let reader = TarReader(source: pipeline)
        try applier.run(reader)
        let summary = try pipeline.finish()
        finished = true
        return ApplyResult(uncompressedDigest: summary.digest, uncompressedSize: summary.uncompressedSize,
                           compressedSize: summary.compressedSize)
    }
}

private let whiteoutPrefix = Array(".wh.".utf8)
private let whiteoutMetaPrefix = Array(".wh..wh.".utf8)
private let opaqueMarker = Array(".wh..wh..opq".utf8)

/// The state of one apply: the root, the resolver with its cached parent, deferred directory times and, for
/// opaque markers in `.delete` mode, the paths this layer created.
private final class Applier {
    let rootfd: Int32
    let options: ApplyOptions
    let resolver: PathResolver
    let lowerfds: [Int32]
    let euid = geteuid()
    let egid = getegid()
    let umask = currentUmask()
    /// Directory path → (atime, mtime), applied deepest first at the end.
    var directoryTimes: [[UInt8]: (timespec, timespec)] = [:]
    /// Normalized paths this layer created (only kept in `.delete` mode, for opaque markers).
    var created: Set<[UInt8]> = []

    init(rootfd: Int32, options: ApplyOptions) throws(BerthError) {
        self.rootfd = rootfd
        self.options = options
        resolver = try PathResolver(rootfd: rootfd)
        var lowers: [Int32] = []
        if options.whiteouts == .overlay {
            for lower in options.lowerDirectories {
                let fd = open(lower, O_PATH | O_DIRECTORY | O_CLOEXEC)
                guard fd >= 0 else {
                    let error = errnoError("layer apply: open lower directory \(lower)")
                    for fd in lowers { close(fd) }
                    throw error
                }
                lowers.append(fd)
            }
        }
        lowerfds = lowers
        resolver.onCreatedDirectory = { [unowned self] path, resolved, fd throws(BerthError) in
            try self.createdParent(path, resolved: resolved, fd: fd)
        }
    }

    deinit { for fd in lowerfds { close(fd) } }

    func run(_ reader: TarReader) throws(BerthError) {
        while var entry = try reader.next() {
            guard options.shouldContinue() else { throw BerthError(.cancelled, "layer apply cancelled") }
            if options.whiteouts == .overlay {
                // overlayfs reads these from the upper directory (opaque, redirect, metacopy):
                // only whiteout entries may set them, never a layer's own xattrs.
                entry.xattrs.removeAll { $0.name.hasPrefix("trusted.overlay.") }
            }
            try apply(entry, reader)
        }
        try setDirectoryTimes()
    }

    // MARK: Errors

    func failure(_ entry: String, _ action: String, _ code: Int32) -> BerthError {
        switch code {
        case ENOSPC: return BerthError(.resourceExhausted, "no space left on device while writing \(quoted(entry))")
        case EDQUOT: return BerthError(.resourceExhausted, "disk quota exceeded while writing \(quoted(entry))")
        case ENOTDIR, ELOOP, ENAMETOOLONG, EXDEV:
            return .invalidArgument("layer entry \(quoted(entry)): \(action): \(errnoText(code))")
        default: return errnoError("layer entry \(quoted(entry)): \(action)", errno: code)
        }
    }

    // MARK: Entries

    func apply(_ entry: TarEntry, _ reader: TarReader) throws(BerthError) {
        let label = entry.displayName
        guard let path = EntryPath.normalize(entry.name) else {
            throw .invalidArgument("layer entry \(quoted(label)): path climbs out of the root with \"..\"")
        }
        if path.isEmpty { return }  // the root itself: ignored, as containerd does
        let (parentPath, base) = EntryPath.split(path)
        // Aufs metadata (`.wh..wh.plnk`, `.wh..wh.aufs`) is skipped as Docker does; any other whiteout-named
        // directory in the middle of a path is not something a valid layer holds.
        if let component = firstWhiteoutComponent(parentPath) {
            if component.starts(with: whiteoutMetaPrefix) { return }
            throw .invalidArgument("layer entry \(quoted(label)): whiteout \(quoted(display(component))) used as a directory")
        }
        if base.starts(with: whiteoutPrefix) {
            if base == opaqueMarker {
                try opaque(parentPath, label: label)
            } else if base.starts(with: whiteoutMetaPrefix) {
                return
            } else {
                let target = Array(base.dropFirst(whiteoutPrefix.count))
                guard !target.isEmpty, target != [EntryPath.dot], target != [EntryPath.dot, EntryPath.dot] else {
                    throw .invalidArgument("layer entry \(quoted(label)): whiteout names no entry inside its directory")
                }
                try whiteout(parentPath, target, entry, label: label)
            }
            return
        }
        let parent = try resolver.parent(parentPath, entry: label)
        switch entry.kind {
        case .regular: try writeRegular(entry, parent, base, reader, label: label)
        case .directory: try makeDirectory(entry, parent, base, path: path, label: label)
        case .symlink: try makeSymlink(entry, parent, base, label: label)
        case .hardlink: try makeHardlink(entry, parent, base, path: path, parentPath: parentPath, label: label)
        case .characterDevice, .blockDevice, .fifo: try makeNode(entry, parent, base, label: label)
        }
        if options.whiteouts == .delete { created.insert(path) }
    }

    private func firstWhiteoutComponent(_ path: [UInt8]) -> ArraySlice<UInt8>? {
        // Scans in place: this runs for every entry.
        var start = 0
        let count = path.count
        while start < count {
            var end = start
            while end < count && path[end] != EntryPath.slash { end += 1 }
            if end - start >= 4 && path[start] == 0x2E && path[start + 1] == 0x77 && path[start + 2] == 0x68
                && path[start + 3] == 0x2E {
                return path[start..<end]
            }
            start = end + 1
        }
        return nil
    }

    /// Creates `create` at `base` in `dirfd`; if something is already there, removes it (recursively) first.
    private func createReplacing(_ dirfd: Int32, _ base: [UInt8], label: String, action: String,
                                 _ create: (UnsafePointer<CChar>) -> Int32) throws(BerthError) -> Int32 {
        try withCString(base) { name throws(BerthError) -> Int32 in
            var result = create(name)
            if result < 0 && errno == EEXIST {
                try removeAllAt(dirfd, base)
                result = create(name)
            }
            guard result >= 0 else { throw failure(label, action, errno) }
            return result
        }
    }

    private func needsChown(_ entry: TarEntry, _ parent: PathResolver.Parent) -> Bool {
        let defaultGid = parent.inheritedGid ?? egid
        return entry.uid != Int(euid) || entry.gid != Int(defaultGid)
    }

    private func needsChmod(_ mode: UInt32, _ parent: PathResolver.Parent, isDirectory: Bool) -> Bool {
        if mode & 0o7000 != 0 || (mode & 0o777) & UInt32(umask) != 0 { return true }
        // mkdir in a setgid directory makes the new directory setgid too.
        return isDirectory && parent.inheritedGid != nil
    }

    private func times(_ entry: TarEntry) -> (timespec, timespec) {
        let mtime = timespec(tv_sec: Int(entry.mtime.seconds), tv_nsec: entry.mtime.nanoseconds)
        var atime = mtime
        if let a = entry.atime, (a.seconds, a.nanoseconds) > (entry.mtime.seconds, entry.mtime.nanoseconds) {
            atime = timespec(tv_sec: Int(a.seconds), tv_nsec: a.nanoseconds)
        }
        return (atime, mtime)
    }

    private func writeRegular(_ entry: TarEntry, _ parent: PathResolver.Parent, _ base: [UInt8],
                              _ reader: TarReader, label: String) throws(BerthError) {
        let perm = mode_t(entry.mode & 0o777)
        let fd = try createReplacing(parent.fd, base, label: label, action: "create file") {
            openAt(parent.fd, $0, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, perm)
        }
        defer { close(fd) }
        try reader.readData { piece throws(BerthError) in
            var offset = 0
            while offset < piece.count {
                let n = write(fd, piece.baseAddress! + offset, piece.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw failure(label, "write", errno)
                }
                offset += n
            }
        }
        if needsChown(entry, parent) {
            guard fchown(fd, uid_t(entry.uid), gid_t(entry.gid)) == 0 else { throw failure(label, "chown", errno) }
        }
        for (name, value) in entry.xattrs {
            let status = value.withUnsafeBytes { fsetxattr(fd, name, $0.baseAddress, $0.count, 0) }
            if status != 0 { try xattrFailed(name, errno, label: label, regularOrDirectory: true) }
        }
        if needsChmod(entry.mode, parent, isDirectory: false) || (!entry.xattrs.isEmpty && entry.mode & 0o6000 != 0) {
            guard fchmod(fd, mode_t(entry.mode)) == 0 else { throw failure(label, "chmod", errno) }
        }
        let (atime, mtime) = times(entry)
        let status = withUnsafeTemporaryAllocation(of: timespec.self, capacity: 2) { pair in
            pair[0] = atime
            pair[1] = mtime
            return futimens(fd, pair.baseAddress)
        }
        guard status == 0 else { throw failure(label, "set times", errno) }
    }

    private func xattrFailed(_ name: String, _ code: Int32, label: String, regularOrDirectory: Bool) throws(BerthError) {
        // As containerd: xattrs a filesystem does not support, and user.* on entries that cannot carry them,
        // are skipped.
        if code == ENOTSUP { return }
        if code == EPERM && name.hasPrefix("user.") && !regularOrDirectory { return }
        throw failure(label, "set xattr \(name)", code)
    }

    private func makeDirectory(_ entry: TarEntry, _ parent: PathResolver.Parent, _ base: [UInt8],
                               path: [UInt8], label: String) throws(BerthError) {
        let perm = mode_t(entry.mode & 0o777)
        var fresh = true
        let fd: Int32 = try withCString(base) { name throws(BerthError) -> Int32 in
            if mkdirat(parent.fd, name, perm) != 0 {
                guard errno == EEXIST else { throw failure(label, "mkdir", errno) }
                fresh = false
            }
            var fd = openAt(parent.fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if fd < 0 && !fresh && (errno == ENOTDIR || errno == ELOOP) {
                // A non-directory (or a symlink) is in the way: replace it.
                try removeAllAt(parent.fd, base)
                guard mkdirat(parent.fd, name, perm) == 0 else { throw failure(label, "mkdir", errno) }
                fresh = true
                fd = openAt(parent.fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            }
            guard fd >= 0 else { throw failure(label, "open directory", errno) }
            return fd
        }
        do throws(BerthError) {
            if !fresh || needsChown(entry, parent) {
                guard fchown(fd, uid_t(entry.uid), gid_t(entry.gid)) == 0 else { throw failure(label, "chown", errno) }
            }
            for (name, value) in entry.xattrs {
                let status = value.withUnsafeBytes { fsetxattr(fd, name, $0.baseAddress, $0.count, 0) }
                if status != 0 { try xattrFailed(name, errno, label: label, regularOrDirectory: true) }
            }
            if !fresh || needsChmod(entry.mode, parent, isDirectory: true) {
                guard fchmod(fd, mode_t(entry.mode)) == 0 else { throw failure(label, "chmod", errno) }
            }
        } catch {
            close(fd)
            throw error
        }
        directoryTimes[path] = times(entry)
        // The next entries are most likely inside this directory: keep it open as the cached parent.
        resolver.adopt(fd, path: path, mode: mode_t(entry.mode), gid: gid_t(entry.gid))
    }

    /// chown, xattrs, chmod and times for an entry that has no open fd, by name inside its parent.
    private func setAttributes(_ entry: TarEntry, _ parent: PathResolver.Parent, _ base: [UInt8],
                               label: String, chmod: Bool, chown: Bool? = nil) throws(BerthError) {
        try withCString(base) { name throws(BerthError) in
            if chown ?? needsChown(entry, parent) {
                guard fchownat(parent.fd, name, uid_t(entry.uid), gid_t(entry.gid), AT_SYMLINK_NOFOLLOW) == 0 else {
                    throw failure(label, "chown", errno)
                }
            }
            if !entry.xattrs.isEmpty {
                let path = procPath(parent.fd, base)
                try withCString(path) { cpath throws(BerthError) in
                    for (key, value) in entry.xattrs {
                        let status = value.withUnsafeBytes { lsetxattr(cpath, key, $0.baseAddress, $0.count, 0) }
                        if status != 0 { try xattrFailed(key, errno, label: label, regularOrDirectory: entry.kind == .hardlink) }
                    }
                }
            }
            if chmod {
                // glibc's fchmodat with AT_SYMLINK_NOFOLLOW refuses symlinks, so it never follows one.
                guard fchmodat(parent.fd, name, mode_t(entry.mode), AT_SYMLINK_NOFOLLOW) == 0 else {
                    throw failure(label, "chmod", errno)
                }
            }
            let (atime, mtime) = times(entry)
            let status = withUnsafeTemporaryAllocation(of: timespec.self, capacity: 2) { pair in
                pair[0] = atime
                pair[1] = mtime
                return utimensat(parent.fd, name, pair.baseAddress, AT_SYMLINK_NOFOLLOW)
            }
            guard status == 0 else { throw failure(label, "set times", errno) }
        }
    }

    private func makeSymlink(_ entry: TarEntry, _ parent: PathResolver.Parent, _ base: [UInt8], label: String) throws(BerthError) {
        let target = entry.linkName
        _ = try createReplacing(parent.fd, base, label: label, action: "symlink") { name in
            withCStringNoThrow(target) { symlinkat($0, parent.fd, name) }
        }
        try setAttributes(entry, parent, base, label: label, chmod: false)
    }

    private func makeNode(_ entry: TarEntry, _ parent: PathResolver.Parent, _ base: [UInt8], label: String) throws(BerthError) {
        let type: mode_t = switch entry.kind {
        case .characterDevice: S_IFCHR
        case .blockDevice: S_IFBLK
        default: S_IFIFO
        }
        let device = entry.kind == .fifo ? 0 : cberth_makedev(entry.deviceMajor, entry.deviceMinor)
        _ = try createReplacing(parent.fd, base, label: label, action: "mknod") { name in
            mknodat(parent.fd, name, type | mode_t(entry.mode & 0o777), device)
        }
        try setAttributes(entry, parent, base, label: label, chmod: needsChmod(entry.mode, parent, isDirectory: false))
    }

    private func makeHardlink(_ entry: TarEntry, _ parent: PathResolver.Parent, _ base: [UInt8],
                              path: [UInt8], parentPath: [UInt8], label: String) throws(BerthError) {
        guard let target = EntryPath.normalize(entry.linkName) else {
            throw .invalidArgument("layer entry \(quoted(label)): hardlink target \(quoted(display(entry.linkName))) climbs out of the root with \"..\"")
        }
        guard !target.isEmpty, target != path else {
            throw .invalidArgument("layer entry \(quoted(label)): invalid hardlink target \(quoted(display(entry.linkName)))")
        }
        let (targetParentPath, targetBase) = EntryPath.split(target)
        // The target's parent resolves inside the root like any entry's; its final component is not followed
        // (a hardlink to a symlink links the symlink), as containerd does.
        let targetDir: Int32
        var ownsTargetDir = false
        if targetParentPath == parentPath {
            targetDir = parent.fd
        } else {
            guard let fd = resolver.lookup(targetParentPath) else {
                throw .invalidArgument("layer entry \(quoted(label)): hardlink target \(quoted(display(entry.linkName))) does not exist")
            }
            targetDir = fd
            ownsTargetDir = fd != rootfd
        }
        defer { if ownsTargetDir { close(targetDir) } }
        let targetStat = withCStringNoThrow(targetBase) { lstatAt(targetDir, $0) }
        guard let targetStat else {
            throw .invalidArgument("layer entry \(quoted(label)): hardlink target \(quoted(display(entry.linkName))) does not exist")
        }
        guard fileType(targetStat.st_mode) != S_IFDIR else {
            throw .invalidArgument("layer entry \(quoted(label)): hardlink target \(quoted(display(entry.linkName))) is a directory")
        }
        _ = try createReplacing(parent.fd, base, label: label, action: "link") { name in
            withCStringNoThrow(targetBase) { linkat(targetDir, $0, parent.fd, name, 0) }
        }
        // As containerd: the link entry's owner, xattrs, mode and times apply to the (shared) inode.
        let isSymlink = fileType(targetStat.st_mode) == S_IFLNK
        try setAttributes(entry, parent, base, label: label, chmod: !isSymlink, chown: true)
    }

    // MARK: Whiteouts

    private func whiteout(_ parentPath: [UInt8], _ target: [UInt8], _ entry: TarEntry, label: String) throws(BerthError) {
        let parent = try resolver.parent(parentPath, entry: label)
        switch options.whiteouts {
        case .delete:
            try removeAllAt(parent.fd, target)
        case .overlay:
            _ = try createReplacing(parent.fd, target, label: label, action: "create whiteout device") { name in
                mknodat(parent.fd, name, S_IFCHR, 0)
            }
            if needsChown(entry, parent) {
                let status = withCStringNoThrow(target) {
                    fchownat(parent.fd, $0, uid_t(entry.uid), gid_t(entry.gid), AT_SYMLINK_NOFOLLOW)
                }
                guard status == 0 else { throw failure(label, "chown whiteout", errno) }
            }
        }
    }

    private func opaque(_ parentPath: [UInt8], label: String) throws(BerthError) {
        let parent = try resolver.parent(parentPath, entry: label)
        switch options.whiteouts {
        case .overlay:
            let status = withCStringNoThrow(procPath(parent.fd, [])) { path in
                setxattr(path, "trusted.overlay.opaque", "y", 1, 0)
            }
            guard status == 0 else { throw failure(label, "set trusted.overlay.opaque", errno) }
        case .delete:
            for name in try listDirectory(parent.fd) {
                if !created.contains(EntryPath.join(parentPath, name)) {
                    try removeAllAt(parent.fd, name)
                }
            }
        }
    }

    // MARK: Directories

    /// A missing parent was created: in overlay mode copy the attributes of the topmost lower directory at
    /// the same (resolved) path; record its times either way so they are set after its children.
    private func createdParent(_ path: [UInt8], resolved: [UInt8], fd: Int32) throws(BerthError) {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw errnoError("stat new directory \(display(path))") }
        var atime = st.st_atim
        var mtime = st.st_mtim
        let label = display(path)
        for lower in lowerfds {
            let lowerfd = withCStringNoThrow(resolved) { openInRoot(lower, $0, flags: O_PATH | O_NOFOLLOW) }
            if lowerfd < 0 {
                if errno == ENOENT { continue }
                if errno == ENOTDIR || errno == ELOOP { break }
                throw errnoError("lower directory for \(quoted(label))")
            }
            defer { close(lowerfd) }
            var lowerStat = stat()
            guard fstat(lowerfd, &lowerStat) == 0 else { throw errnoError("stat lower directory for \(quoted(label))") }
            guard fileType(lowerStat.st_mode) == S_IFDIR else { break }
            guard fchown(fd, lowerStat.st_uid, lowerStat.st_gid) == 0 else { throw failure(label, "chown", errno) }
            guard fchmod(fd, lowerStat.st_mode & 0o7777) == 0 else { throw failure(label, "chmod", errno) }
            let xattrs = try readXattrs(procPath(lowerfd, []), keep: { !$0.hasPrefix("trusted.") })
            for (name, value) in xattrs {
                let status = value.withUnsafeBytes { fsetxattr(fd, name, $0.baseAddress, $0.count, 0) }
                if status != 0 { try xattrFailed(name, errno, label: label, regularOrDirectory: true) }
            }
            atime = lowerStat.st_atim
            mtime = lowerStat.st_mtim
            break
        }
        if directoryTimes[path] == nil { directoryTimes[path] = (atime, mtime) }
    }

    /// Sets the recorded directory times, deepest directories first, skipping paths that are no longer
    /// directories.
    private func setDirectoryTimes() throws(BerthError) {
        let ordered = directoryTimes.sorted { lhs, rhs in
            let (l, r) = (EntryPath.depth(lhs.key), EntryPath.depth(rhs.key))
            return l != r ? l > r : lhs.key.lexicographicallyPrecedes(rhs.key)
        }
        var openParentPath: [UInt8]?
        var openParent: Int32 = -1
        defer { if openParent >= 0 && openParent != rootfd { close(openParent) } }
        for (path, (atime, mtime)) in ordered {
            let (parentPath, base) = EntryPath.split(path)
            if openParentPath != parentPath {
                if openParent >= 0 && openParent != rootfd { close(openParent) }
                openParent = resolver.lookup(parentPath) ?? -1
                openParentPath = parentPath
            }
            guard openParent >= 0 else { continue }
            try withCString(base) { name throws(BerthError) in
                guard let st = lstatAt(openParent, name), fileType(st.st_mode) == S_IFDIR else { return }
                let status = withUnsafeTemporaryAllocation(of: timespec.self, capacity: 2) { pair in
                    pair[0] = atime
                    pair[1] = mtime
                    return utimensat(openParent, name, pair.baseAddress, AT_SYMLINK_NOFOLLOW)
                }
                guard status == 0 else { throw failure(display(path), "set directory times", errno) }
            }
        }
    }
}
