import BerthContent
import BerthCore
import BerthMetadata
@testable import BerthSnapshots
import BerthSystem
import BerthTestSupport
import Foundation
import Testing

@Suite("Differ")
struct DifferTests {
    @Test func readOnlyOverlayDropsUpperAndWorkAndStacksTheUpperOnTop() {
        let active = Mount(type: "overlay", source: "overlay",
                           options: ["index=off", "workdir=/s/3/work", "upperdir=/s/3/fs", "lowerdir=/s/2/fs:/s/1/fs"])
        let readOnly = Differ.readOnlyMount(active)
        #expect(readOnly.options == ["index=off", "lowerdir=/s/3/fs:/s/2/fs:/s/1/fs", "ro"])
        let bind = Differ.readOnlyMount(Mount(type: "bind", source: "/s/1/fs", options: ["rw", "rbind"]))
        #expect(bind.options == ["rbind", "ro"])
    }

    @Test func startUpCleansWhatACrashLeftInScratch() async throws {
        let directory = try TemporaryDirectory(prefix: "berth-differ")
        defer { directory.remove() }
        let scratch = directory.appending("tmp")
        try FileManager.default.createDirectory(atPath: scratch + "/mount-abc", withIntermediateDirectories: true)
        try Data("partial".utf8).write(to: URL(fileURLWithPath: scratch + "/diff-123"))
        let mounted = try Command.run(["mount", "-t", "tmpfs", "tmpfs", scratch + "/mount-abc"])
        try #require(mounted.succeeded, "\(mounted)")
        defer { unmountAll(under: scratch) }
        let store = try MetadataStore(path: directory.appending("meta.db"), blobs: try BlobStore(root: directory.appending("content")))
        defer { try? store.close() }
        _ = try Differ(store: store, scratch: scratch)
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch).isEmpty)
        #expect(mountPoints(under: scratch).isEmpty)
    }
}

@Suite("Mounter")
struct MounterTests {
    /// The per-mount options of the mount at `target`, from /proc/self/mountinfo.
    static func options(at target: String) throws -> Set<String> {
        let text = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
        let line = try #require(text.split(separator: "\n").last { $0.split(separator: " ")[4] == target })
        return Set(line.split(separator: " ")[5].split(separator: ",").map(String.init))
    }

    @Test func bindMountsKeepReadOnlyNosuidNodevNoexec() throws {
        let directory = try TemporaryDirectory(prefix: "berth-mounter")
        defer { unmountAll(under: directory.path); directory.remove() }
        let source = directory.appending("source"), target = directory.appending("target")
        try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        try Mounter.mount([Mount(type: "bind", source: source, options: ["rbind", "ro", "nosuid", "nodev", "noexec"])], at: target)
        let options = try Self.options(at: target)
        #expect(options.isSuperset(of: ["ro", "nosuid", "nodev", "noexec"]), "mount options: \(options)")
        try Mounter.unmountAll(target)
        #expect(mountPoints(under: target).isEmpty)
    }

    @Test func overlayLongerThanAPageMountsLayerByLayer() throws {
        let directory = try TemporaryDirectory(prefix: "berth-mounter")
        defer { unmountAll(under: directory.path); directory.remove() }
        // 150 lower directories with long names: far over the 4096-byte option limit.
        var lowers: [String] = []
        for index in 0..<150 {
            let lower = directory.appending("a-rather-long-layer-directory-name-\(index)")
            try FileManager.default.createDirectory(atPath: lower, withIntermediateDirectories: true)
            try Data("\(index)".utf8).write(to: URL(fileURLWithPath: "\(lower)/file-\(index)"))
            lowers.append(lower)
        }
        let target = directory.appending("target")
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        try Mounter.mount([Mount(type: "overlay", source: "overlay", options: ["lowerdir=" + lowers.joined(separator: ":")])], at: target)
        #expect(try FileManager.default.contentsOfDirectory(atPath: target).count == 150)
        try Mounter.unmountAll(target)
    }
}
