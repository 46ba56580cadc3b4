#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import BerthCore
import BerthSystem
import CBerthSystem

/// Lexical handling of entry names.
enum EntryPath {
    static let slash = UInt8(ascii: "/")
    static let dot = UInt8(ascii: ".")

    /// `name` as components joined by `/`, without empty and `.` components or a leading `/` (so an
    /// absolute name is taken relative to the root, as tar does), with each `..` removing the component
    /// before it. Nil if a `..` would climb above the root. The empty result is the root itself.
    static func normalize(_ name: [UInt8]) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(name.count)
        var starts: [Int] = []
        var index = 0
        let count = name.count
        while index < count {
            var end = index
            while end < count && name[end] != slash { end += 1 }
            let length = end - index
            if length == 0 || (length == 1 && name[index] == dot) {
                // empty or "."
            } else if length == 2 && name[index] == dot && name[index + 1] == dot {
                guard let start = starts.popLast() else { return nil }
                out.removeSubrange(max(0, start - 1)...)
            } else {
                if !out.isEmpty { out.append(slash) }
                starts.append(out.count)
                out.append(contentsOf: name[index..<end])
            }
            index = end + 1
        }
        return out
    }

    /// Like ``normalize(_:)``, but a `..` at the root stays at the root, as the kernel resolves it
    /// (`RESOLVE_IN_ROOT`). For symlink targets, which may legitimately say `../../..`.
    static func normalizeInRoot(_ name: [UInt8]) -> [UInt8] {
        var components: [ArraySlice<UInt8>] = []
        for component in name.split(separator: slash, omittingEmptySubsequences: true) {
            if component.count == 1 && component.first == dot { continue }
            if component.count == 2 && component.allSatisfy({ $0 == dot }) {
                _ = components.popLast()
                continue
            }
            components.append(component)
        }
        return Array(components.joined(separator: [slash]))
    }

    /// Splits a normalized path into its parent (empty for the root) and final component.
    static func split(_ path: [UInt8]) -> (parent: [UInt8], base: [UInt8]) {
        guard let slashIndex = path.lastIndex(of: slash) else { return ([], path) }
        return (Array(path[..<slashIndex]), Array(path[(slashIndex + 1)...]))
    }

    static func join(_ parent: [UInt8], _ base: [UInt8]) -> [UInt8] {
        parent.isEmpty ? base : parent + [slash] + base
    }

    static func depth(_ path: [UInt8]) -> Int { path.reduce(0) { $0 + ($1 == slash ? 1 : 0) } }
}

/// Opens directories inside the apply root, never leaving it.
///
/// Every lookup goes through `openat2(rootfd, path, O_PATH|O_DIRECTORY, RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS)`:
/// the kernel resolves symlinks and `..` as if the root were `/`, so a symlink `evil -> /` in the tree makes
/// `evil/etc` mean `<root>/etc`. The last directory looked up stays open: tar streams list a directory's
/// entries together, so most entries reuse it with no lookup at all. Callers act on an entry's final
/// component relative to that fd with `*at` calls that do not follow it.
final class PathResolver {
    struct Parent {
        var fd: Int32
        /// The group a new entry in this directory gets: the directory's own when it is setgid.
        var inheritedGid: gid_t?
    }

    /// Called when a missing parent directory was created (`path` relative to the root, its fd open);
    /// the applier copies attributes from a lower directory and records the directory's times.
    typealias CreatedDirectory = (_ path: [UInt8], _ resolvedPath: [UInt8], _ fd: Int32) throws(BerthError) -> Void

    let rootfd: Int32
    private var cachedPath: [UInt8]?
    private var cached = Parent(fd: -1, inheritedGid: nil)
    private let processGid = getegid()
    private let rootRealPath: [UInt8]
    var onCreatedDirectory: CreatedDirectory?

    init(rootfd: Int32) throws(BerthError) {
        self.rootfd = rootfd
        rootRealPath = (try? readLinkAt(AT_FDCWD, "/proc/self/fd/\(rootfd)")) ?? []
    }

    deinit { dropCache() }

    private func dropCache() {
        if cached.fd >= 0 && cached.fd != rootfd { close(cached.fd) }
        cached = Parent(fd: -1, inheritedGid: nil)
        cachedPath = nil
    }

    private func describe(_ fd: Int32) -> Parent {
        var st = stat()
        guard fstat(fd, &st) == 0 else { return Parent(fd: fd, inheritedGid: nil) }
        return Parent(fd: fd, inheritedGid: st.st_mode & S_ISGID != 0 ? st.st_gid : nil)
    }

    /// Makes `fd` (a directory at normalized `path`, owned by the resolver from now on) the cached parent.
    func adopt(_ fd: Int32, path: [UInt8], mode: mode_t, gid: gid_t) {
        dropCache()
        cachedPath = path
        cached = Parent(fd: fd, inheritedGid: mode & S_ISGID != 0 ? gid : nil)
    }

    /// The directory at normalized `path` (empty: the root), created with its missing ancestors if needed.
    /// The fd belongs to the resolver; it stays valid until the next call.
    /// Throws `invalidArgument` naming `entry` when a component is not a directory or cannot be created.
    func parent(_ path: [UInt8], entry: String) throws(BerthError) -> Parent {
        if let cachedPath, cachedPath == path { return cached }
        dropCache()
        if path.isEmpty {
            cached = describe(rootfd)
            cachedPath = path
            return cached
        }
        var fd = withCStringNoThrow(path) { openInRoot(rootfd, $0, flags: O_PATH | O_DIRECTORY) }
        if fd < 0 {
            let code = errno
            guard code == ENOENT else { throw resolveError(path, entry: entry, code) }
            fd = try createMissing(path, entry: entry)
        }
        cached = describe(fd)
        cachedPath = path
        return cached
    }

    /// Opens the existing directory at normalized `path` without creating anything; nil if it is missing or
    /// not a directory. The caller closes the fd (unless it is `rootfd`).
    func lookup(_ path: [UInt8]) -> Int32? {
        if path.isEmpty { return rootfd }
        let fd = withCStringNoThrow(path) { openInRoot(rootfd, $0, flags: O_PATH | O_DIRECTORY) }
        return fd >= 0 ? fd : nil
    }

    private func resolveError(_ path: [UInt8], entry: String, _ code: Int32) -> BerthError {
        switch code {
        case ENOTDIR:
            return .invalidArgument("layer entry \(quoted(entry)): parent \(quoted(display(path))) is not a directory")
        case ELOOP, EXDEV, ENAMETOOLONG:
            return .invalidArgument("layer entry \(quoted(entry)): cannot resolve parent \(quoted(display(path))): \(errnoText(code))")
        default:
            return errnoError("layer entry \(quoted(entry)): open parent \(quoted(display(path)))", errno: code)
        }
    }

    /// Walks `path` from the root, creating each missing directory (mode 0755, or a lower's attributes through
    /// `onCreatedDirectory`). Each prefix is resolved from the root again, so symlinks keep their in-root meaning.
    private func createMissing(_ path: [UInt8], entry: String, symlinks: Int = 0) throws(BerthError) -> Int32 {
        guard symlinks < 40 else {
            throw .invalidArgument("layer entry \(quoted(entry)): too many levels of symbolic links in its parent")
        }
        var previous = rootfd
        defer { if previous != rootfd { close(previous) } }
        var end = 0
        while end <= path.count {
            var next = end
            while next < path.count && path[next] != EntryPath.slash { next += 1 }
            let prefix = Array(path[0..<next])
            let component = Array(path[end..<next])
            end = next + 1
            var fd = withCStringNoThrow(prefix) { openInRoot(rootfd, $0, flags: O_PATH | O_DIRECTORY) }
            if fd < 0 {
                let code = errno
                guard code == ENOENT else { throw resolveError(prefix, entry: entry, code) }
                let made = withCStringNoThrow(component) { mkdirat(previous, $0, 0o755) }
                if made != 0 {
                    let mkdirCode = errno
                    if mkdirCode == EEXIST, let st = withCStringNoThrow(component, { lstatAt(previous, $0) }),
                       fileType(st.st_mode) == S_IFLNK {
                        // A dangling symlink: create its target, resolved inside the root, as containerd's
                        // RootPath + MkdirAll do. Continue with the rest of the path below that target.
                        let target = try withCString(component) { name throws(BerthError) in try readLinkAt(previous, name) }
                        let base = target.first == EntryPath.slash ? [] : resolvedPath(of: previous, appending: [])
                        let rest = next < path.count ? Array(path[next...]) : []
                        let redirected = EntryPath.normalizeInRoot(base + [EntryPath.slash] + target + rest)
                        return try createMissing(redirected, entry: entry, symlinks: symlinks + 1)
                    }
                    if mkdirCode == ENOSPC || mkdirCode == EDQUOT {
                        throw BerthError(.resourceExhausted, "no space left on device while writing \(quoted(entry))")
                    }
                    throw .invalidArgument("layer entry \(quoted(entry)): cannot create parent \(quoted(display(prefix))): \(errnoText(mkdirCode))")
                }
                fd = withCStringNoThrow(component) { openAt(previous, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
                guard fd >= 0 else { throw errnoError("layer entry \(quoted(entry)): open new parent \(quoted(display(prefix)))") }
                if let onCreatedDirectory {
                    do throws(BerthError) {
                        try onCreatedDirectory(prefix, resolvedPath(of: previous, appending: component), fd)
                    } catch {
                        close(fd)
                        throw error
                    }
                }
            }
            if previous != rootfd { close(previous) }
            previous = fd
        }
        let result = previous
        previous = rootfd
        return result
    }

    /// The path below the root that `dirfd` really is (symlinks resolved), plus `component`.
    private func resolvedPath(of dirfd: Int32, appending component: [UInt8]) -> [UInt8] {
        guard dirfd != rootfd, let real = try? readLinkAt(AT_FDCWD, "/proc/self/fd/\(dirfd)"),
              real.starts(with: rootRealPath) else { return component }
        let relative = EntryPath.normalize(Array(real.dropFirst(rootRealPath.count))) ?? []
        return EntryPath.join(relative, component)
    }
}
