import BerthCore
import BerthSystem
import BerthTestSupport
import CBerthSystem
import Foundation
import Testing
@testable import BerthArchive

/// A scratch directory for one test; removed by `cleanup()`.
struct Scratch {
    let path: String
    init(_ prefix: String = "archive") throws {
        path = try TestEnvironment.makeTemporaryDirectory("berth-\(prefix)")
    }
    func sub(_ name: String) throws -> String {
        let p = "\(path)/\(name)"
        try FileSystem.makeDirectories(p)
        return p
    }
    func cleanup() {
        _ = try? Command.run(["umount", "-R", "-l", path])
        try? FileTree.removeTree(path)
    }
}

/// One entry for a hand-built tar.
struct Item {
    var entry: TarEntry
    var data: [UInt8] = []

    static func file(_ name: String, _ content: String = "", mode: UInt32 = 0o644, uid: Int = 0, gid: Int = 0,
                     mtime: Int64 = 1_600_000_000, nanos: Int = 0, xattrs: [(String, [UInt8])] = []) -> Item {
        var e = TarEntry(name: Array(name.utf8), kind: .regular)
        e.mode = mode; e.uid = uid; e.gid = gid
        e.size = Int64(content.utf8.count)
        e.mtime = .init(seconds: mtime, nanoseconds: nanos)
        e.xattrs = xattrs.map { (name: $0.0, value: $0.1) }
        return Item(entry: e, data: Array(content.utf8))
    }
    static func dir(_ name: String, mode: UInt32 = 0o755, uid: Int = 0, gid: Int = 0, mtime: Int64 = 1_600_000_000) -> Item {
        var e = TarEntry(name: Array(name.utf8), kind: .directory)
        e.mode = mode; e.uid = uid; e.gid = gid
        e.mtime = .init(seconds: mtime, nanoseconds: 0)
        return Item(entry: e)
    }
    static func symlink(_ name: String, _ target: String) -> Item {
        var e = TarEntry(name: Array(name.utf8), kind: .symlink)
        e.mode = 0o777
        e.linkName = Array(target.utf8)
        return Item(entry: e)
    }
    static func hardlink(_ name: String, _ target: String) -> Item {
        var e = TarEntry(name: Array(name.utf8), kind: .hardlink)
        e.linkName = Array(target.utf8)
        return Item(entry: e)
    }
    static func node(_ name: String, _ kind: TarEntry.Kind, major: UInt32 = 0, minor: UInt32 = 0, mode: UInt32 = 0o600) -> Item {
        var e = TarEntry(name: Array(name.utf8), kind: kind)
        e.mode = mode; e.deviceMajor = major; e.deviceMinor = minor
        return Item(entry: e)
    }
}

/// Writes `items` as an uncompressed tar (with its trailer) and returns the bytes.
func tarBytes(_ items: [Item], trailer: Bool = true) throws -> [UInt8] {
    let scratch = try Scratch("tarbytes")
    defer { scratch.cleanup() }
    let path = "\(scratch.path)/out.tar"
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    let output = try LayerOutput(fd: fd, compression: .uncompressed)
    let writer = TarWriter(output: output)
    for item in items {
        try writer.writeHeader(item.entry)
        if item.entry.kind == .regular && !item.data.isEmpty {
            try item.data.withUnsafeBytes { buffer in try writer.writeData(buffer) }
            try writer.endData(size: Int64(item.data.count))
        }
    }
    if trailer { try writer.finish() }
    _ = try output.finish()
    close(fd)
    return try FileSystem.readFile(path)
}

/// Compresses bytes with an external tool (`gzip -c` or `zstd -c`).
func compress(_ bytes: [UInt8], with tool: [String]) throws -> [UInt8] {
    let scratch = try Scratch("compress")
    defer { scratch.cleanup() }
    let input = "\(scratch.path)/in"
    try FileSystem.writeAtomically(bytes, to: input)
    let result = try Command.run(["sh", "-c", "\(tool.joined(separator: " ")) < \(input) > \(scratch.path)/out"])
    #expect(result.succeeded, "\(result)")
    return try FileSystem.readFile("\(scratch.path)/out")
}

/// Applies a layer held in memory by writing it to a file first.
@discardableResult
func apply(_ bytes: [UInt8], _ compression: LayerCompression = .uncompressed, to root: String,
           options: ApplyOptions = ApplyOptions(whiteouts: .delete)) throws(BerthError) -> ApplyResult {
    let path = root + ".layer-\(UInt32.random(in: 0...UInt32.max))"
    try FileSystem.writeAtomically(bytes, to: path)
    defer { unlink(path) }
    return try applyFile(path, compression, to: root, options: options)
}

@discardableResult
func applyFile(_ path: String, _ compression: LayerCompression, to root: String,
               options: ApplyOptions = ApplyOptions(whiteouts: .delete)) throws(BerthError) -> ApplyResult {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw errnoError("open \(path)") }
    defer { close(fd) }
    return try LayerApplier.apply(from: fd, compression: compression, to: root, options: options)
}

/// Expects `body` to throw a BerthError with `code` whose message contains every one of `words`.
func expectError(_ code: BerthError.Code, _ words: [String] = [], sourceLocation: SourceLocation = #_sourceLocation,
                 _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("expected \(code) error, got success", sourceLocation: sourceLocation)
    } catch let error as BerthError {
        #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
        for word in words {
            #expect(error.message.contains(word), "message \(error.message) lacks \(word)", sourceLocation: sourceLocation)
        }
    } catch {
        Issue.record("expected BerthError \(code), got \(error)", sourceLocation: sourceLocation)
    }
}

func lstatPath(_ path: String) -> stat? {
    var st = stat()
    return lstat(path, &st) == 0 ? st : nil
}

func exists(_ path: String) -> Bool { lstatPath(path) != nil }

func readText(_ path: String) -> String? { try? FileSystem.readString(path) }

func xattr(_ path: String, _ name: String) -> [UInt8]? {
    guard let all = try? readXattrs(Array(path.utf8), keep: { _ in true }) else { return nil }
    return all.first { $0.name == name }?.value
}

func sh(_ command: String) throws -> CommandResult {
    let result = try Command.run(["sh", "-c", command], timeout: .seconds(600))
    #expect(result.succeeded, "\(result)")
    return result
}

/// Everything observable about a tree, for comparing two trees: per path its type, mode, owner, size,
/// mtime, link target, device, xattrs, content digest and hard-link group.
func describeTree(_ root: String, includeRoot: Bool = false) throws -> [String: String] {
    var result: [String: String] = [:]
    var inodeGroups: [String: [String]] = [:]
    func visit(_ relative: String) throws {
        let full = relative.isEmpty ? root : "\(root)/\(relative)"
        guard let st = lstatPath(full) else { return }
        let type = st.st_mode & S_IFMT
        var line = "mode=\(String(st.st_mode, radix: 8)) uid=\(st.st_uid) gid=\(st.st_gid) mtime=\(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)"
        if type == S_IFREG {
            let data = try FileSystem.readFile(full)
            line += " size=\(data.count) data=\(data.reduce(UInt64(14695981039346656037)) { ($0 ^ UInt64($1)) &* 1099511628211 })"
            if st.st_nlink > 1 { inodeGroups["\(st.st_dev):\(st.st_ino)", default: []].append(relative) }
        } else if type == S_IFLNK {
            line += " target=\(String(decoding: try readLinkAt(AT_FDCWD, full), as: UTF8.self))"
        } else if type == S_IFCHR || type == S_IFBLK {
            line += " dev=\(cberth_major(st.st_rdev)),\(cberth_minor(st.st_rdev))"
        }
        let attrs = try readXattrs(Array(full.utf8), keep: { !$0.hasPrefix("trusted.overlay.") })
        if !attrs.isEmpty { line += " xattrs=" + attrs.map { "\($0.name)=\(String(decoding: $0.value, as: UTF8.self))" }.joined(separator: ",") }
        if !relative.isEmpty || includeRoot { result[relative.isEmpty ? "." : relative] = line }
        if type == S_IFDIR {
            for name in FileSystem.list(full).sorted() {
                try visit(relative.isEmpty ? name : "\(relative)/\(name)")
            }
        }
    }
    try visit("")
    for (_, names) in inodeGroups where names.count > 1 {
        let group = names.sorted().joined(separator: "|")
        for name in names { result[name, default: ""] += " links=\(group)" }
    }
    return result
}

func expectSameTrees(_ a: [String: String], _ b: [String: String], sourceLocation: SourceLocation = #_sourceLocation) {
    for key in Set(a.keys).union(b.keys).sorted() where a[key] != b[key] {
        Issue.record("\(key):\n  expected \(a[key] ?? "missing")\n  actual   \(b[key] ?? "missing")", sourceLocation: sourceLocation)
    }
}

struct XattrError: Error { let message: String }

func setXattr(_ path: String, _ name: String, _ value: String) throws {
    let status = path.withCString { p in lsetxattr(p, name, value, value.utf8.count, 0) }
    guard status == 0 else { throw XattrError(message: "lsetxattr \(name) on \(path): \(String(cString: strerror(errno)))") }
}
