import BerthCore
import Foundation

/// What the snapshotter conformance suite drives: containerd's Snapshotter operations for one
/// namespace, as Berth's metadata store serves them over one snapshotter's storage.
public protocol SnapshotterUnderTest: Sendable {
    /// The snapshotter's name (`overlayfs`, `native`).
    var name: String { get }
    /// A directory the suite may use for mount points and scratch files.
    var scratch: String { get }
    func prepare(_ key: String, parent: String, labels: [String: String]) async throws(BerthError) -> [Mount]
    func view(_ key: String, parent: String) async throws(BerthError) -> [Mount]
    func mounts(_ key: String) async throws(BerthError) -> [Mount]
    func commit(_ name: String, key: String, labels: [String: String]) async throws(BerthError)
    func remove(_ key: String) async throws(BerthError)
    func stat(_ key: String) async throws(BerthError) -> SnapshotInfo
    func update(_ key: String, labels: [String: String], paths: [String]) async throws(BerthError) -> SnapshotInfo
    func list(filters: [String]) async throws(BerthError) -> [SnapshotInfo]
    func usage(_ key: String) async throws(BerthError) -> SnapshotUsage
    /// Ids of the snapshots that have storage on disk.
    func storedIDs() throws(BerthError) -> [Int64]
}

/// The behaviours containerd's snapshotter test suite checks, written for Berth. Each case takes
/// a fresh, empty snapshotter; a failed expectation throws ``ConformanceFailure``.
public enum SnapshotterConformance {
    public struct Case: Sendable, CustomStringConvertible {
        public let description: String
        public let run: @Sendable (any SnapshotterUnderTest) async throws -> Void
    }

    public static let cases: [Case] = [
        Case(description: "prepare, commit and view a chain", run: prepareCommitView),
        Case(description: "stat, kinds and parents", run: statKindsAndParents),
        Case(description: "errors: existing keys, missing or active parents, committing twice", run: errors),
        Case(description: "remove with children, then without", run: removeWithChildren),
        Case(description: "changes and deletions across layers", run: changesAcrossLayers),
        Case(description: "permissions, ownership, links preserved", run: metadataPreserved),
        Case(description: "usage figures", run: usage),
        Case(description: "labels: update and filters", run: labelsAndFilters),
        Case(description: "many layers (130) still mount", run: manyLayers),
        Case(description: "concurrent prepares of one parent", run: concurrentPrepares),
        Case(description: "views are read-only", run: viewIsReadOnly),
        Case(description: "remove frees storage", run: removeFreesStorage),
    ]

    // MARK: Cases

    static func prepareCommitView(_ s: any SnapshotterUnderTest) async throws {
        let base = try await s.prepare("base-active", parent: "", labels: [:])
        try withMounted(base, s) { root in
            try write("hello\n", to: root + "/greeting")
            try makeDirectory(root + "/dir")
            try write("one", to: root + "/dir/one")
        }
        try await s.commit("base", key: "base-active", labels: [:])
        let child = try await s.prepare("child-active", parent: "base", labels: [:])
        try withMounted(child, s) { root in
            try expect(read(root + "/greeting") == "hello\n", "child sees the parent's file")
            try write("two", to: root + "/dir/two")
        }
        try await s.commit("child", key: "child-active", labels: [:])
        let view = try await s.view("child-view", parent: "child")
        try withMounted(view, s) { root in
            try expect(read(root + "/greeting") == "hello\n", "view sees the first layer")
            try expect(read(root + "/dir/one") == "one" && read(root + "/dir/two") == "two", "view sees both layers")
        }
        let again = try await s.mounts("child-view")
        try expect(again == view, "Mounts of a view returns what View returned")
    }

    static func statKindsAndParents(_ s: any SnapshotterUnderTest) async throws {
        _ = try await s.prepare("a", parent: "", labels: ["x": "1"])
        var info = try await s.stat("a")
        try expect(info.kind == .active && info.parent == "" && info.name == "a" && info.labels == ["x": "1"], "active snapshot info: \(info)")
        try await s.commit("a-c", key: "a", labels: ["y": "2"])
        info = try await s.stat("a-c")
        try expect(info.kind == .committed && info.labels == ["y": "2"], "committed info takes the commit's labels: \(info)")
        try await expectCode(.notFound, "the active key is gone after commit") { _ = try await s.stat("a") }
        _ = try await s.view("v", parent: "a-c")
        info = try await s.stat("v")
        try expect(info.kind == .view && info.parent == "a-c", "view info: \(info)")
        try await expectCode(.notFound, "stat of a missing key") { _ = try await s.stat("missing") }
        try await expectCode(.failedPrecondition, "a committed snapshot has no mounts") { _ = try await s.mounts("a-c") }
    }

    static func errors(_ s: any SnapshotterUnderTest) async throws {
        _ = try await s.prepare("a", parent: "", labels: [:])
        try await expectCode(.alreadyExists, "prepare of an existing key") { _ = try await s.prepare("a", parent: "", labels: [:]) }
        try await expectCode(.notFound, "prepare on a missing parent") { _ = try await s.prepare("b", parent: "nope", labels: [:]) }
        try await expectCode(.invalidArgument, "prepare on an active parent") { _ = try await s.prepare("b", parent: "a", labels: [:]) }
        try await expectCode(.invalidArgument, "view of an active snapshot") { _ = try await s.view("b", parent: "a") }
        try await expectCode(.invalidArgument, "an empty key") { _ = try await s.prepare("", parent: "", labels: [:]) }
        try await s.commit("a-c", key: "a", labels: [:])
        _ = try await s.prepare("a2", parent: "", labels: [:])
        try await expectCode(.alreadyExists, "commit to an existing name") { try await s.commit("a-c", key: "a2", labels: [:]) }
        try await expectCode(.notFound, "commit of a missing key") { try await s.commit("z", key: "missing", labels: [:]) }
        _ = try await s.view("v", parent: "a-c")
        try await expectCode(.failedPrecondition, "commit of a view") { try await s.commit("v-c", key: "v", labels: [:]) }
        try await expectCode(.notFound, "remove of a missing key") { try await s.remove("missing") }
    }

    static func removeWithChildren(_ s: any SnapshotterUnderTest) async throws {
        _ = try await s.prepare("p", parent: "", labels: [:])
        try await s.commit("p-c", key: "p", labels: [:])
        _ = try await s.prepare("child", parent: "p-c", labels: [:])
        try await expectCode(.failedPrecondition, "remove of a snapshot with children") { try await s.remove("p-c") }
        _ = try await s.stat("p-c")
        try await s.remove("child")
        try await s.remove("p-c")
        try await expectCode(.notFound, "removed snapshot") { _ = try await s.stat("p-c") }
    }

    static func changesAcrossLayers(_ s: any SnapshotterUnderTest) async throws {
        let l1 = try await s.prepare("l1", parent: "", labels: [:])
        try withMounted(l1, s) { root in
            try write("keep", to: root + "/keep")
            try write("gone", to: root + "/gone")
            try makeDirectory(root + "/dir-gone")
            try write("x", to: root + "/dir-gone/x")
            try makeDirectory(root + "/becomes-file")
            try write("becomes-dir", to: root + "/becomes-dir")
            try makeDirectory(root + "/opaque")
            try write("old", to: root + "/opaque/old")
        }
        try await s.commit("l1-c", key: "l1", labels: [:])
        let l2 = try await s.prepare("l2", parent: "l1-c", labels: [:])
        try withMounted(l2, s) { root in
            try remove(root + "/gone")
            try removeTree(root + "/dir-gone")
            try removeTree(root + "/becomes-file")
            try write("now a file", to: root + "/becomes-file")
            try remove(root + "/becomes-dir")
            try makeDirectory(root + "/becomes-dir")
            try write("inside", to: root + "/becomes-dir/inside")
            try removeTree(root + "/opaque")
            try makeDirectory(root + "/opaque")
            try write("new", to: root + "/opaque/new")
            try write("changed", to: root + "/keep")
        }
        try await s.commit("l2-c", key: "l2", labels: [:])
        let view = try await s.view("v", parent: "l2-c")
        try withMounted(view, s) { root in
            try expect(read(root + "/keep") == "changed", "changed file")
            try expect(!exists(root + "/gone") && !exists(root + "/dir-gone"), "deleted file and directory")
            try expect(read(root + "/becomes-file") == "now a file", "directory replaced by a file")
            try expect(read(root + "/becomes-dir/inside") == "inside", "file replaced by a directory")
            try expect(list(root + "/opaque") == ["new"], "recreated directory shows only new entries")
        }
        // The lower layer is untouched.
        let lower = try await s.view("v1", parent: "l1-c")
        try withMounted(lower, s) { root in
            try expect(read(root + "/gone") == "gone" && read(root + "/keep") == "keep", "lower layer unchanged")
        }
    }

    static func metadataPreserved(_ s: any SnapshotterUnderTest) async throws {
        let l1 = try await s.prepare("l1", parent: "", labels: [:])
        try withMounted(l1, s) { root in
            try write("secret", to: root + "/secret")
            // chown clears setuid, so it goes first.
            try check(lchown(root + "/secret", 1234, 5678), "chown")
            try check(chmod(root + "/secret", 0o4741), "chmod")
            try makeDirectory(root + "/sticky")
            try check(chmod(root + "/sticky", 0o1777), "chmod")
            try check(symlink("secret", root + "/link"), "symlink")
            try check(link(root + "/secret", root + "/hard"), "link")
        }
        try await s.commit("l1-c", key: "l1", labels: [:])
        let l2 = try await s.prepare("l2", parent: "l1-c", labels: [:])
        try withMounted(l2, s) { root in try write("other", to: root + "/other") }
        try await s.commit("l2-c", key: "l2", labels: [:])
        let view = try await s.view("v", parent: "l2-c")
        try withMounted(view, s) { root in
            let secret = try lstatOf(root + "/secret")
            try expect(secret.st_mode & 0o7777 == 0o4741, "mode with setuid kept: \(String(secret.st_mode, radix: 8))")
            try expect(secret.st_uid == 1234 && secret.st_gid == 5678, "owner kept")
            try expect(try lstatOf(root + "/sticky").st_mode & 0o7777 == 0o1777, "sticky directory kept")
            try expect(readLink(root + "/link") == "secret", "symlink kept")
            let hard = try lstatOf(root + "/hard")
            try expect(hard.st_ino == secret.st_ino && secret.st_nlink == 2, "hard link kept")
        }
    }

    static func usage(_ s: any SnapshotterUnderTest) async throws {
        let l1 = try await s.prepare("l1", parent: "", labels: [:])
        try withMounted(l1, s) { root in
            try write(String(repeating: "x", count: 1 << 20), to: root + "/big")
            try write("a", to: root + "/small")
            try check(link(root + "/small", root + "/small-link"), "link")
        }
        let active = try await s.usage("l1")
        try s.expectUsage(active, atLeast: 1 << 20, inodes: 3, "active")
        try await s.commit("l1-c", key: "l1", labels: [:])
        let committed = try await s.usage("l1-c")
        try s.expectUsage(committed, atLeast: 1 << 20, inodes: 3, "committed")
        let l2 = try await s.prepare("l2", parent: "l1-c", labels: [:])
        try withMounted(l2, s) { root in try write(String(repeating: "y", count: 256 << 10), to: root + "/more") }
        try await s.commit("l2-c", key: "l2", labels: [:])
        let second = try await s.usage("l2-c")
        if s.name == "overlayfs" {
            // Overlay layers hold only their own changes.
            try expect(second.size >= 256 << 10 && second.size < 1 << 20, "overlay layer usage counts its own files: \(second)")
        } else {
            try expect(second.size >= (1 << 20) + (256 << 10), "native usage counts the whole tree: \(second)")
        }
    }

    static func labelsAndFilters(_ s: any SnapshotterUnderTest) async throws {
        _ = try await s.prepare("a", parent: "", labels: ["role": "base", "keep": "1"])
        _ = try await s.prepare("b", parent: "", labels: ["role": "other"])
        var info = try await s.update("a", labels: ["role": "changed"], paths: ["labels.role"])
        try expect(info.labels == ["role": "changed", "keep": "1"], "update of one label: \(info.labels)")
        info = try await s.update("a", labels: ["only": "this"], paths: [])
        try expect(info.labels == ["only": "this"], "update without paths replaces labels")
        try await expectCode(.invalidArgument, "update of an immutable field") { _ = try await s.update("a", labels: [:], paths: ["parent"]) }
        let filtered = try await s.list(filters: ["labels.role==other"]).map(\.name)
        try expect(filtered == ["b"], "list by label: \(filtered)")
        let byKind = try await s.list(filters: ["kind==active"]).map(\.name).sorted()
        try expect(byKind == ["a", "b"], "list by kind: \(byKind)")
    }

    static func manyLayers(_ s: any SnapshotterUnderTest) async throws {
        var parent = ""
        for index in 0..<130 {
            let key = "layer-\(index)-active"
            let mounts = try await s.prepare(key, parent: parent, labels: [:])
            if s.name == "native" {
                // Native copies each parent in full; write without mounting to keep this quick.
                try write("\(index)", to: mounts[0].source + "/file-\(index)")
            } else {
                try withMounted(mounts, s) { root in try write("\(index)", to: root + "/file-\(index)") }
            }
            parent = "layer-\(index)"
            try await s.commit(parent, key: key, labels: [:])
        }
        let view = try await s.view("top", parent: parent)
        try withMounted(view, s) { root in
            try expect(list(root).count == 130, "all 130 layers' files visible")
            try expect(read(root + "/file-0") == "0" && read(root + "/file-129") == "129", "first and last layer visible")
        }
    }

    static func concurrentPrepares(_ s: any SnapshotterUnderTest) async throws {
        let base = try await s.prepare("base-active", parent: "", labels: [:])
        try withMounted(base, s) { root in try write("base", to: root + "/base") }
        try await s.commit("base", key: "base-active", labels: [:])
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<8 {
                group.addTask { _ = try await s.prepare("child-\(index)", parent: "base", labels: [:]) }
            }
            try await group.waitForAll()
        }
        // The same key from many callers at once: exactly one wins.
        let outcomes = await withTaskGroup(of: BerthError.Code?.self) { group -> [BerthError.Code?] in
            for _ in 0..<8 {
                group.addTask {
                    do { _ = try await s.prepare("contended", parent: "base", labels: [:]); return nil } catch let error as BerthError {
                        return error.code
                    } catch { return .internal }
                }
            }
            var all: [BerthError.Code?] = []
            for await outcome in group { all.append(outcome) }
            return all
        }
        let winners = outcomes.filter { $0 == nil }.count
        let losers = outcomes.filter { $0 == .alreadyExists }.count
        try expect(winners == 1 && losers == outcomes.count - 1,
                   "one prepare of a contended key wins, the rest are alreadyExists: \(outcomes)")
        let children = try await s.list(filters: ["parent==base"]).count
        try expect(children == 9, "nine children of base: \(children)")
    }

    static func viewIsReadOnly(_ s: any SnapshotterUnderTest) async throws {
        let base = try await s.prepare("base-active", parent: "", labels: [:])
        try withMounted(base, s) { root in try write("base", to: root + "/base") }
        try await s.commit("base", key: "base-active", labels: [:])
        let view = try await s.view("v", parent: "base")
        try withMounted(view, s) { root in
            let fd = open(root + "/new", O_WRONLY | O_CREAT, 0o644)
            if fd >= 0 { close(fd) }
            try expect(fd < 0 && errno == EROFS, "writing into a view fails with EROFS")
        }
    }

    static func removeFreesStorage(_ s: any SnapshotterUnderTest) async throws {
        _ = try await s.prepare("a", parent: "", labels: [:])
        try await s.commit("a-c", key: "a", labels: [:])
        _ = try await s.view("v", parent: "a-c")
        try expect(try s.storedIDs().count == 2, "two snapshots stored")
        try await s.remove("v")
        try await s.remove("a-c")
        try expect(try s.storedIDs().isEmpty, "no storage left after removing everything")
    }

    // MARK: Helpers

    /// Mounts `mounts` on a temporary directory as a client would (`mount(8)`; an overlay whose
    /// options exceed a page is mounted from the lower directories' common parent with relative
    /// paths, as containerd's client does), runs `body`, and unmounts.
    public static func withMounted(_ mounts: [Mount], _ s: any SnapshotterUnderTest, _ body: (String) throws -> Void) throws {
        var template = Array("\(s.scratch)/mount-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw ConformanceFailure("mkdtemp in \(s.scratch) failed")
        }
        let target = String(cString: made)
        defer { rmdir(target) }
        for mount in mounts { try mountOne(mount, at: target) }
        defer {
            for _ in mounts { _ = try? Command.run(["/usr/bin/umount", target]) }
        }
        try body(target)
    }

    static func mountOne(_ mount: Mount, at target: String) throws {
        var options = mount.options
        var directory: String? = nil
        if mount.type == "overlay", options.joined(separator: ",").utf8.count >= 4096,
           let index = options.firstIndex(where: { $0.hasPrefix("lowerdir=") }) {
            let lowers = options[index].dropFirst("lowerdir=".count).split(separator: ":").map(String.init)
            let common = commonDirectory(lowers + options.compactMap { option in
                ["upperdir=", "workdir="].first(where: option.hasPrefix).map { String(option.dropFirst($0.count)) }
            })
            directory = common
            options = options.map { option in
                for prefix in ["lowerdir=", "upperdir=", "workdir="] where option.hasPrefix(prefix) {
                    let paths = option.dropFirst(prefix.count).split(separator: ":").map { String($0.dropFirst(common.count + 1)) }
                    return prefix + paths.joined(separator: ":")
                }
                return option
            }
        }
        var arguments = ["-t", mount.type == "bind" ? "none" : mount.type]
        if !options.isEmpty { arguments += ["-o", options.joined(separator: ",")] }
        arguments += [mount.source, target]
        let result = try Command.run(["/usr/bin/mount"] + arguments, directory: directory)
        guard result.succeeded else { throw ConformanceFailure("mount failed: \(result)") }
    }

    static func commonDirectory(_ paths: [String]) -> String {
        guard var common = paths.first.map({ $0.split(separator: "/").map(String.init) }) else { return "/" }
        for path in paths.dropFirst() {
            let parts = path.split(separator: "/").map(String.init)
            var shared = 0
            while shared < min(common.count, parts.count - 1), common[shared] == parts[shared] { shared += 1 }
            common = Array(common.prefix(shared))
        }
        return "/" + common.joined(separator: "/")
    }

    static func expectCode(_ code: BerthError.Code, _ what: String, _ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch let error as BerthError {
            try expect(error.code == code, "\(what): expected \(code), got \(error.code): \(error.message)")
            return
        }
        throw ConformanceFailure("\(what): expected \(code), but it succeeded")
    }

    static func expect(_ condition: @autoclosure () throws -> Bool, _ what: String) throws {
        guard try condition() else { throw ConformanceFailure(what) }
    }

    static func check(_ result: Int32, _ what: String) throws {
        guard result == 0 else { throw ConformanceFailure("\(what): \(String(cString: strerror(errno)))") }
    }

    static func write(_ text: String, to path: String) throws {
        guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8)) else {
            throw ConformanceFailure("cannot write \(path)")
        }
    }

    static func read(_ path: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: path) else { throw ConformanceFailure("cannot read \(path)") }
        return String(decoding: data, as: UTF8.self)
    }

    static func makeDirectory(_ path: String) throws { try check(mkdir(path, 0o755), "mkdir \(path)") }
    static func remove(_ path: String) throws { try check(unlink(path), "unlink \(path)") }
    static func removeTree(_ path: String) throws { try FileManager.default.removeItem(atPath: path) }
    static func exists(_ path: String) -> Bool { var st = stat(); return lstat(path, &st) == 0 }
    static func list(_ path: String) throws -> [String] { try FileManager.default.contentsOfDirectory(atPath: path).sorted() }

    static func lstatOf(_ path: String) throws -> stat {
        var st = stat()
        try check(lstat(path, &st), "lstat \(path)")
        return st
    }

    static func readLink(_ path: String) throws -> String {
        try FileManager.default.destinationOfSymbolicLink(atPath: path)
    }
}

extension SnapshotterUnderTest {
    func expectUsage(_ usage: SnapshotUsage, atLeast size: Int64, inodes: Int64, _ what: String) throws {
        try SnapshotterConformance.expect(usage.size >= size, "\(what) usage size \(usage.size) >= \(size)")
        // Overlay counts the layer's own inodes (files plus its root); native the whole tree.
        try SnapshotterConformance.expect(usage.inodes >= inodes, "\(what) usage inodes \(usage.inodes) >= \(inodes)")
    }
}

/// A conformance expectation that did not hold.
public struct ConformanceFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
