#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import BerthCore
import BerthSystem
import CBerthSystem

/// What a diff wrote.
public struct DiffResult: Sendable {
    /// sha256 of the uncompressed tar (the layer's diff ID).
    public var uncompressedDigest: Digest
    /// sha256 of the bytes written to the output (the layer blob's digest).
    public var compressedDigest: Digest
    /// Bytes written to the output.
    public var compressedSize: Int64

    public init(uncompressedDigest: Digest, compressedDigest: Digest, compressedSize: Int64) {
        self.uncompressedDigest = uncompressedDigest
        self.compressedDigest = compressedDigest
        self.compressedSize = compressedSize
    }
}

/// Computes layers from two directory trees (containerd's double-walk differ).
public enum LayerDiffer {
    /// Writes, to the open file descriptor `output` (not closed), a layer tar (compressed as `compression`
    /// says; callers normally pass `.gzip`) holding the changes that turn directory `lower` (nil: an empty
    /// tree) into directory `upper`.
    ///
    /// Added or changed entries carry full metadata (mode, owner, mtime with nanoseconds, xattrs in the
    /// `security.`, `trusted.` and `user.` namespaces other than `trusted.overlay.*`, device numbers, symlink
    /// targets); deletions become `.wh.NAME` whiteouts (a deleted directory is one whiteout); entries come in
    /// walk order, each directory's names sorted bytewise, so the output is deterministic; files hard-linked
    /// together within the layer become tar hardlink entries; parent directories of changed entries are
    /// included; sockets are skipped. An entry is unchanged when type, mode, uid, gid, size, mtime (seconds
    /// and nanoseconds), symlink target, device numbers and xattrs are equal and, when both mtimes have zero
    /// nanoseconds (a filesystem or copy that truncates times), the contents are equal.
    ///
    /// - Throws: `BerthError` `.notFound` if `upper` or `lower` does not exist, `.resourceExhausted` if
    ///   the output's disk is full, `.internal` for a file that changes while it is read, other codes for
    ///   system errors reading the trees.
    public static func writeDiff(lower: String?, upper: String, compression: LayerCompression = .gzip,
                                 to output: Int32) throws(BerthError) -> DiffResult {
        let upperfd = open(upper, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard upperfd >= 0 else { throw errnoError("layer diff: open upper directory \(upper)") }
        defer { close(upperfd) }
        var lowerfd: Int32?
        if let lower {
            let fd = open(lower, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            guard fd >= 0 else { throw errnoError("layer diff: open lower directory \(lower)") }
            lowerfd = fd
        }
        defer { if let lowerfd { close(lowerfd) } }
        let out = try LayerOutput(fd: output, compression: compression)
        let differ = Differ(writer: TarWriter(output: out), upperRoot: upperfd)
        try differ.walk([], upper: upperfd, lower: lowerfd)
        try differ.writer.finish()
        let digests = try out.finish()
        return DiffResult(uncompressedDigest: digests.uncompressed, compressedDigest: digests.compressed,
                          compressedSize: out.compressedSize)
    }
}

private struct InodeKey: Hashable {
    var device: UInt64
    var inode: UInt64
}

private final class Differ {
    let writer: TarWriter
    let upperRoot: Int32
    /// Directories already written, so parents are written once.
    var writtenDirectories: Set<[UInt8]> = []
    /// Hard-linked inode → the first name it was written under.
    var inodeSource: [InodeKey: [UInt8]] = [:]
    /// Hard-linked inode → unchanged names seen before any changed name, written as links once one is.
    var inodeReferences: [InodeKey: [[UInt8]]] = [:]
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
    let otherBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)

    init(writer: TarWriter, upperRoot: Int32) {
        self.writer = writer
        self.upperRoot = upperRoot
    }

    deinit {
        buffer.deallocate()
        otherBuffer.deallocate()
    }

    func walk(_ directory: [UInt8], upper: Int32, lower: Int32?) throws(BerthError) {
        let upperNames = try listDirectory(upper).sorted { $0.lexicographicallyPrecedes($1) }
        let lowerNames = try lower.map { fd throws(BerthError) in try listDirectory(fd) }?
            .sorted { $0.lexicographicallyPrecedes($1) } ?? []
        var u = 0, l = 0
        while u < upperNames.count || l < lowerNames.count {
            if u == upperNames.count || (l < lowerNames.count && lowerNames[l].lexicographicallyPrecedes(upperNames[u])) {
                try writeWhiteout(directory, lowerNames[l])
                l += 1
                continue
            }
            let name = upperNames[u]
            let inLower = l < lowerNames.count && lowerNames[l] == name
            if inLower { l += 1 }
            u += 1
            try visit(directory, name, upper: upper, lower: inLower ? lower : nil)
        }
    }

    private func visit(_ directory: [UInt8], _ name: [UInt8], upper: Int32, lower: Int32?) throws(BerthError) {
        let path = EntryPath.join(directory, name)
        guard let upperStat = withCStringNoThrow(name, { lstatAt(upper, $0) }) else {
            if errno == ENOENT { return }
            throw errnoError("layer diff: stat \(display(path))")
        }
        let type = fileType(upperStat.st_mode)
        if type == S_IFSOCK { return }
        var lowerStat: stat?
        if let lower {
            lowerStat = withCStringNoThrow(name) { lstatAt(lower, $0) }
            if let st = lowerStat, fileType(st.st_mode) != type { lowerStat = nil }
        }
        let entry = try makeEntry(path, upperStat, dirfd: upper, name: name)
        var unchanged = false
        if let lowerStat, let lower {
            unchanged = try isUnchanged(entry, upperStat, lowerStat, upper: upper, lower: lower, name: name)
        }
        if type == S_IFDIR {
            if !unchanged { try writeDirectory(entry, path) }
            let child = try openDirectory(upper, name, path)
            defer { close(child) }
            var lowerChild: Int32?
            if let lower, lowerStat != nil { lowerChild = try openDirectory(lower, name, path) }
            defer { if let lowerChild { close(lowerChild) } }
            try walk(path, upper: child, lower: lowerChild)
            return
        }
        if upperStat.st_nlink > 1 {
            let key = InodeKey(device: UInt64(upperStat.st_dev), inode: UInt64(upperStat.st_ino))
            if let source = inodeSource[key] {
                try writeLink(path, to: source, entry)
                return
            }
            if unchanged {
                inodeReferences[key, default: []].append(path)
                return
            }
            inodeSource[key] = path
            try writeEntry(entry, path, upper: upper, name: name)
            for extra in inodeReferences.removeValue(forKey: key) ?? [] {
                try writeLink(extra, to: path, entry)
            }
            return
        }
        if unchanged { return }
        try writeEntry(entry, path, upper: upper, name: name)
    }

    private func openDirectory(_ dirfd: Int32, _ name: [UInt8], _ path: [UInt8]) throws(BerthError) -> Int32 {
        let fd = withCStringNoThrow(name) { openAt(dirfd, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
        guard fd >= 0 else { throw errnoError("layer diff: open directory \(display(path))") }
        return fd
    }

    private func makeEntry(_ path: [UInt8], _ st: stat, dirfd: Int32, name: [UInt8]) throws(BerthError) -> TarEntry {
        let kind: TarEntry.Kind
        switch fileType(st.st_mode) {
        case S_IFDIR: kind = .directory
        case S_IFLNK: kind = .symlink
        case S_IFCHR: kind = .characterDevice
        case S_IFBLK: kind = .blockDevice
        case S_IFIFO: kind = .fifo
        default: kind = .regular
        }
        var entry = TarEntry(name: kind == .directory ? path + [EntryPath.slash] : path, kind: kind)
        entry.mode = UInt32(st.st_mode & 0o7777)
        entry.uid = Int(st.st_uid)
        entry.gid = Int(st.st_gid)
        entry.size = kind == .regular ? Int64(st.st_size) : 0
        entry.mtime = .init(seconds: Int64(st.st_mtim.tv_sec), nanoseconds: st.st_mtim.tv_nsec)
        if kind == .symlink {
            entry.linkName = try withCString(name) { cname throws(BerthError) in try readLinkAt(dirfd, cname) }
        }
        if kind == .characterDevice || kind == .blockDevice {
            entry.deviceMajor = cberth_major(st.st_rdev)
            entry.deviceMinor = cberth_minor(st.st_rdev)
        }
        entry.xattrs = try readXattrs(procPath(dirfd, name), keep: isPortableXattr)
        return entry
    }

    private func isUnchanged(_ entry: TarEntry, _ upper: stat, _ lower: stat, upper upperfd: Int32, lower lowerfd: Int32,
                             name: [UInt8]) throws(BerthError) -> Bool {
        guard upper.st_mode == lower.st_mode, upper.st_uid == lower.st_uid, upper.st_gid == lower.st_gid,
              upper.st_mtim.tv_sec == lower.st_mtim.tv_sec, upper.st_mtim.tv_nsec == lower.st_mtim.tv_nsec else {
            return false
        }
        let type = fileType(upper.st_mode)
        if type != S_IFDIR && upper.st_size != lower.st_size { return false }
        if (type == S_IFCHR || type == S_IFBLK) && upper.st_rdev != lower.st_rdev { return false }
        if type == S_IFLNK {
            let target = try withCString(name) { cname throws(BerthError) in try readLinkAt(lowerfd, cname) }
            if target != entry.linkName { return false }
        }
        let lowerXattrs = try readXattrs(procPath(lowerfd, name), keep: isPortableXattr)
        guard lowerXattrs.count == entry.xattrs.count,
              zip(lowerXattrs, entry.xattrs).allSatisfy({ $0.name == $1.name && $0.value == $1.value }) else {
            return false
        }
        if type == S_IFREG && upper.st_mtim.tv_nsec == 0 {
            return try sameContents(upperfd, lowerfd, name)
        }
        return true
    }

    private func sameContents(_ upperDir: Int32, _ lowerDir: Int32, _ name: [UInt8]) throws(BerthError) -> Bool {
        let a = withCStringNoThrow(name) { openAt(upperDir, $0, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) }
        guard a >= 0 else { throw errnoError("layer diff: open \(display(name))") }
        defer { close(a) }
        let b = withCStringNoThrow(name) { openAt(lowerDir, $0, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) }
        guard b >= 0 else { throw errnoError("layer diff: open \(display(name))") }
        defer { close(b) }
        while true {
            let n = try readFull(a, buffer)
            let m = try readFull(b, otherBuffer)
            if n != m { return false }
            if n == 0 { return true }
            if memcmp(buffer.baseAddress!, otherBuffer.baseAddress!, n) != 0 { return false }
        }
    }

    private func readFull(_ fd: Int32, _ into: UnsafeMutableRawBufferPointer) throws(BerthError) -> Int {
        var total = 0
        while total < into.count {
            let n = read(fd, into.baseAddress! + total, into.count - total)
            if n < 0 {
                if errno == EINTR { continue }
                throw errnoError("layer diff: read")
            }
            if n == 0 { break }
            total += n
        }
        return total
    }

    // MARK: Output

    /// Writes the directories above `path` that are not in the output yet, top-down, as they are in the upper tree.
    private func includeParents(_ path: [UInt8]) throws(BerthError) {
        var ends: [Int] = []
        for (index, byte) in path.enumerated() where byte == EntryPath.slash { ends.append(index) }
        for end in ends {
            let parent = Array(path[..<end])
            if writtenDirectories.contains(parent) { continue }
            guard let st = withCStringNoThrow(parent, { lstatAt(upperRoot, $0) }) else {
                throw errnoError("layer diff: stat \(display(parent))")
            }
            let entry = try makeEntry(parent, st, dirfd: upperRoot, name: parent)
            writtenDirectories.insert(parent)
            try writer.writeHeader(entry)
        }
    }

    private func writeDirectory(_ entry: TarEntry, _ path: [UInt8]) throws(BerthError) {
        try includeParents(path)
        writtenDirectories.insert(path)
        try writer.writeHeader(entry)
    }

    private func writeWhiteout(_ directory: [UInt8], _ name: [UInt8]) throws(BerthError) {
        let path = EntryPath.join(directory, Array(".wh.".utf8) + name)
        try includeParents(path)
        var entry = TarEntry(name: path, kind: .regular)
        entry.mode = 0
        try writer.writeHeader(entry)
    }

    private func writeLink(_ path: [UInt8], to source: [UInt8], _ template: TarEntry) throws(BerthError) {
        try includeParents(path)
        var entry = template
        entry.name = path
        entry.kind = .hardlink
        entry.linkName = source
        entry.size = 0
        try writer.writeHeader(entry)
    }

    private func writeEntry(_ entry: TarEntry, _ path: [UInt8], upper: Int32, name: [UInt8]) throws(BerthError) {
        try includeParents(path)
        try writer.writeHeader(entry)
        guard entry.kind == .regular, entry.size > 0 else { return }
        let fd = withCStringNoThrow(name) { openAt(upper, $0, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) }
        guard fd >= 0 else { throw errnoError("layer diff: open \(display(path))") }
        defer { close(fd) }
        var left = entry.size
        while left > 0 {
            let want = Int(min(left, Int64(buffer.count)))
            let n = try readFull(fd, UnsafeMutableRawBufferPointer(rebasing: buffer[0..<want]))
            guard n > 0 else { throw .internal("layer diff: \(display(path)) shrank while it was read") }
            try writer.writeData(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            left -= Int64(n)
        }
        try writer.endData(size: entry.size)
    }
}
