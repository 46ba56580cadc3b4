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
