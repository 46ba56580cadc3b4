#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import BerthCore

/// Thin, synchronous file-system calls that report failures as `BerthError`.
///
/// Every state file and blob commit that must survive a crash goes through
/// ``writeAtomically(_:to:mode:durable:)`` or ``commitRename(from:to:)``: data reaches the disk before the
/// name does, so a crash leaves the old file or the new one, never a torn mix.
public enum FileSystem {
    /// Writes `bytes` to a temp file beside `path`, fsyncs it, renames it over `path` and fsyncs
    /// the directory. With `durable` false it skips both fsyncs: readers and a crash of the process
    /// still see the old file or the new one, but a power loss may leave neither. That suits files
    /// of the state directory (tmpfs, like containerd's `/run/containerd`), which a reboot empties
    /// anyway.
    public static func writeAtomically(
        _ bytes: some Collection<UInt8>, to path: String, mode: mode_t = 0o644, durable: Bool = true
    ) throws(BerthError) {
        let directory = parentDirectory(of: path)
        let temp = "\(path).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw errnoError("create \(temp)") }
        do throws(BerthError) {
            try writeAll(fd: fd, Array(bytes))
            guard !durable || fsync(fd) == 0 else { throw errnoError("fsync \(temp)") }
            close(fd)
        } catch {
            close(fd)
            unlink(temp)
            throw error
        }
        guard rename(temp, path) == 0 else {
            let error = errnoError("rename \(temp) to \(path)")
            unlink(temp)
            throw error
        }
        if durable { try syncDirectory(directory) }
    }

    /// Renames a fully written and fsynced file into place and makes the rename durable.
    public static func commitRename(from source: String, to destination: String) throws(BerthError) {
        guard rename(source, destination) == 0 else { throw errnoError("rename \(source) to \(destination)") }
        try syncDirectory(parentDirectory(of: destination))
    }

    public static func syncDirectory(_ path: String) throws(BerthError) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw errnoError("open directory \(path)") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw errnoError("fsync directory \(path)") }
    }

    /// Up to `length` bytes of the file at `path` from `offset` (fewer at its end).
    public static func readRange(_ path: String, offset: Int64, length: Int) throws(BerthError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw errnoError("open \(path)") }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: length)
        var done = 0
        while done < length {
            let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, length - done, off_t(offset) + off_t(done)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw errnoError("read \(path)")
            }
            if n == 0 { break }
            done += n
        }
        bytes.removeLast(length - done)
        return bytes
    }

    /// Creates the directory `path`; `alreadyExists` if it exists.
    public static func makeDirectory(_ path: String, mode: mode_t = 0o755) throws(BerthError) {
        guard mkdir(path, mode) == 0 else { throw errnoError("mkdir \(path)") }
    }

    /// Creates `path` and its missing parents.
    public static func makeDirectories(_ path: String, mode: mode_t = 0o755) throws(BerthError) {
        var current = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            current += "/" + component
            if mkdir(current, mode) != 0 && errno != EEXIST {
                throw errnoError("mkdir \(current)")
            }
        }
    }

    public static func readFile(_ path: String) throws(BerthError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw errnoError("open \(path)") }
        defer { close(fd) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 { if errno == EINTR { continue }; throw errnoError("read \(path)") }
            if n == 0 { return out }
            out.append(contentsOf: chunk[0..<n])
        }
    }

    public static func readString(_ path: String) throws(BerthError) -> String {
        String(decoding: try readFile(path), as: UTF8.self)
    }

    /// File size in bytes, or nil if `path` does not exist.
    public static func size(of path: String) -> Int64? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return Int64(st.st_size)
    }

    public static func status(of path: String) -> stat? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return st
    }

    public static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    /// Names in a directory, without `.` and `..`; empty if it does not exist.
    public static func list(_ path: String) -> [String] {
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Removes a file or a whole tree; a missing path is not an error.
    public static func removeTree(_ path: String) throws(BerthError) {
        var st = stat()
        guard lstat(path, &st) == 0 else {
            if errno == ENOENT { return }
            throw errnoError("lstat \(path)")
        }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            for name in list(path) { try removeTree(path + "/" + name) }
            guard rmdir(path) == 0 || errno == ENOENT else { throw errnoError("rmdir \(path)") }
        } else {
            guard unlink(path) == 0 || errno == ENOENT else { throw errnoError("unlink \(path)") }
        }
    }

    public static func remove(_ path: String) throws(BerthError) {
        guard unlink(path) == 0 || errno == ENOENT else { throw errnoError("unlink \(path)") }
    }

    public static func writeAll(fd: Int32, _ bytes: UnsafeRawBufferPointer) throws(BerthError) {
        var offset = 0
        while offset < bytes.count {
            let n = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                throw errnoError("write")
            }
            offset += n
        }
    }

    public static func writeAll(fd: Int32, _ bytes: [UInt8]) throws(BerthError) {
        var failure: BerthError?
        bytes.withUnsafeBytes { buffer in
            do throws(BerthError) { try writeAll(fd: fd, buffer) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    public static func parentDirectory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        if slash == path.startIndex { return "/" }
        return String(path[..<slash])
    }
}

/// Turns the current `errno` into a `BerthError` whose code fits it.
public func errnoError(_ action: String, errno code: Int32 = errno) -> BerthError {
    let text = String(cString: strerror(code))
    let berthCode: BerthError.Code = switch code {
    case ENOENT: .notFound
    case EEXIST: .alreadyExists
    case ENOSPC, EDQUOT: .resourceExhausted
    case EACCES, EPERM: .permissionDenied
    case EINVAL, ENAMETOOLONG: .invalidArgument
    default: .internal
    }
    return BerthError(berthCode, "\(action): \(text)")
}
