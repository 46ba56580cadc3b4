import BerthTestSupport
import Foundation
import Testing

/// Pulls, imports, mounts and snapshot commands through Debian's ctr against berthd, for both
/// snapshotters.
@Suite("snapshots, diff and unpack through ctr", .serialized)
struct UnpackTests {
    static let snapshotters = ["overlayfs", "native"]

    /// Storage directories of a snapshotter under the daemon's root.
    static func storedSnapshots(_ daemon: DaemonProcess, _ snapshotter: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "\(daemon.root)/snapshots/\(snapshotter)/snapshots")) ?? []).sorted()
    }

    /// Lines of `ctr snapshots ls` after its header: KEY PARENT KIND.
    static func snapshotRows(_ daemon: DaemonProcess, _ snapshotter: String) throws -> [[String]] {
        try daemon.ctrOK(["snapshots", "--snapshotter", snapshotter, "ls"]).split(separator: "\n").dropFirst()
            .map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
    }

    /// What busybox:1 holds once its three layers are applied (scripts/make-test-images).
    static func expectBusyboxTree(_ root: String) throws {
        let fm = FileManager.default
        #expect(fm.isExecutableFile(atPath: "\(root)/bin/busybox"))
        #expect((try? fm.destinationOfSymbolicLink(atPath: "\(root)/bin/sh")) == "busybox")
        #expect(fm.fileExists(atPath: "\(root)/srv/berth-test/keep.txt"))
        #expect(fm.fileExists(atPath: "\(root)/srv/berth-test/added.txt"))
        #expect(!fm.fileExists(atPath: "\(root)/srv/berth-test/removed.txt"), "whiteout of removed.txt applied")
        #expect(!fm.fileExists(atPath: "\(root)/srv/berth-test/gone-dir"), "whiteout of gone-dir applied")
        var keep = stat(), link = stat(), secret = stat(), tmp = stat()
        #expect(lstat("\(root)/srv/berth-test/keep.txt", &keep) == 0 && lstat("\(root)/srv/berth-test/keep-link.txt", &link) == 0)
        #expect(keep.st_ino == link.st_ino, "keep-link.txt is a hard link of keep.txt")
        #expect(lstat("\(root)/srv/berth-test/secret.txt", &secret) == 0 && secret.st_mode & 0o7777 == 0o600)
        #expect(lstat("\(root)/tmp", &tmp) == 0 && tmp.st_mode & 0o7777 == 0o1777)
        let release = try String(contentsOfFile: "\(root)/etc/berth-release", encoding: .utf8)
        #expect(!release.isEmpty)
    }

    @Test("pull (OCI and Docker), check, mount, unmount, rm --sync removes the snapshots", arguments: snapshotters)
    func pullAndMount(snapshotter: String) async throws {
        let images = try TestImages.build()
        defer { images.remove() }
        let registry = try LocalRegistry()
        defer { registry.stop() }
        try registry.push(images)
        try await withDaemon { daemon in
            let target = "\(daemon.directory)/mnt"
            try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
            for ref in ["\(registry.host)/busybox:1", "\(registry.host)/busybox-docker:1"] {
                try daemon.ctrOK(["images", "pull", "--plain-http", "--snapshotter", snapshotter, ref])
                let check = try daemon.ctrOK(["images", "check", "--snapshotter", snapshotter])
                #expect(check.contains("complete"), "images check: \(check)")
                try daemon.ctrOK(["images", "mount", "--snapshotter", snapshotter, ref, target])
                defer { _ = try? daemon.ctr(["images", "unmount", "--rm", target]) }
                try Self.expectBusyboxTree(target)
                try daemon.ctrOK(["images", "unmount", "--rm", target])
                #expect(mountPoints(under: target).isEmpty)
            }
            // Both images share their layers: one chain of three committed snapshots.
            let rows = try Self.snapshotRows(daemon, snapshotter)
            #expect(rows.count == 3 && rows.allSatisfy { $0.last == "Committed" }, "snapshots: \(rows)")
            #expect(Self.storedSnapshots(daemon, snapshotter).count == 3)

            for ref in ["\(registry.host)/busybox:1", "\(registry.host)/busybox-docker:1"] {
                try daemon.ctrOK(["images", "rm", "--sync", ref])
            }
            #expect(try Self.snapshotRows(daemon, snapshotter).isEmpty)
            #expect(Self.storedSnapshots(daemon, snapshotter).isEmpty, "snapshot directories left: \(Self.storedSnapshots(daemon, snapshotter))")
            #expect(try daemon.ctrOK(["content", "ls", "-q"]).isEmpty)
        }
    }

    @Test("pull of a platform from an index, all platforms, zstd and uncompressed layers, 130 layers", arguments: snapshotters)
    func pullVariants(snapshotter: String) async throws {
        let images = try TestImages.build(variants: true)
        defer { images.remove() }
        let registry = try LocalRegistry()
        defer { registry.stop() }
        try registry.push(images)
        try await withDaemon { daemon in
            let target = "\(daemon.directory)/mnt"
            try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
            func mounted(_ ref: String, platform: String? = nil, _ body: () throws -> Void) throws {
                var arguments = ["images", "mount", "--snapshotter", snapshotter]
                if let platform { arguments += ["--platform", platform] }
                try daemon.ctrOK(arguments + [ref, target])
                defer { _ = try? daemon.ctr(["images", "unmount", "--rm", target]) }
                try body()
            }
            let multi = "\(registry.host)/multi:1"
            try daemon.ctrOK(["images", "pull", "--plain-http", "--snapshotter", snapshotter, "--platform", "linux/arm64", multi])
            try mounted(multi, platform: "linux/arm64") { () throws in
                #expect(try String(contentsOfFile: "\(target)/etc/berth-platform", encoding: .utf8) == "linux/arm64/v8\n")
            }
            try daemon.ctrOK(["images", "pull", "--plain-http", "--snapshotter", snapshotter, "--all-platforms", "\(registry.host)/multi-docker:1"])
            for platform in ["linux/amd64", "linux/arm/v7"] {
                try mounted("\(registry.host)/multi-docker:1", platform: platform) { () throws in
                    #expect(try String(contentsOfFile: "\(target)/etc/berth-platform", encoding: .utf8) == platform + "\n")
                }
            }
            for name in ["busybox-zstd:1", "busybox-plain:1"] {
                try daemon.ctrOK(["images", "pull", "--plain-http", "--snapshotter", snapshotter, "\(registry.host)/\(name)"])
                try mounted("\(registry.host)/\(name)") { try Self.expectBusyboxTree(target) }
            }
            // Native copies the tree for each of 130 layers; overlayfs alone meets the option limit.
            if snapshotter == "overlayfs" {
                try daemon.ctrOK(["images", "pull", "--plain-http", "\(registry.host)/deep:1"], timeout: .seconds(300))
                try mounted("\(registry.host)/deep:1") { () throws in
                    let layers = try FileManager.default.contentsOfDirectory(atPath: "\(target)/layers")
                    #expect(layers.count == 129 && !layers.contains("050"), "deep:1 /layers: \(layers.count) entries")
                    #expect(try String(contentsOfFile: "\(target)/layers/130", encoding: .utf8) == "layer 130\n")
                }
            }
            for name in try daemon.ctrOK(["images", "ls", "-q"]).split(separator: "\n") {
                try daemon.ctrOK(["images", "rm", "--sync", String(name)])
            }
            #expect(try Self.snapshotRows(daemon, snapshotter).isEmpty)
            #expect(Self.storedSnapshots(daemon, snapshotter).isEmpty)
        }
    }

    @Test("import unpacks; snapshots ls/tree/info/usage/label/prepare/mounts/diff/commit/view/rm", arguments: snapshotters)
    func snapshotCommands(snapshotter: String) async throws {
        let images = try TestImages.build()
        defer { images.remove() }
        try await withDaemon { daemon in
            let ss = ["snapshots", "--snapshotter", snapshotter]
            try daemon.ctrOK(["images", "import", "--snapshotter", snapshotter, images.ociArchive])
            let rows = try Self.snapshotRows(daemon, snapshotter)
            #expect(rows.count == 3, "three layers unpacked: \(rows)")
            // The top of the chain is the only snapshot no other names as parent.
            let parents = Set(rows.compactMap { $0.count == 3 ? $0[1] : nil })
            let top = try #require(rows.first { !parents.contains($0[0]) }?[0])

            let tree = try daemon.ctrOK(ss + ["tree"])
            #expect(tree.contains(top))
            let info = try daemon.ctrOK(ss + ["info", top])
            #expect(info.contains("\"Kind\": \"Committed\""), "info: \(info)")
            let usage = try daemon.ctrOK(ss + ["usage"])
            #expect(usage.contains(top), "usage: \(usage)")
            try daemon.ctrOK(ss + ["label", top, "stage=test"])
            #expect(try daemon.ctrOK(ss + ["info", top]).contains("\"stage\": \"test\""))

            // A writable snapshot on the image, mounted with the command ctr prints.
            try daemon.ctrOK(ss + ["prepare", "work", top])
            let target = "\(daemon.directory)/work"
            try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
            let command = try daemon.ctrOK(ss + ["mounts", target, "work"]).trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(command.hasPrefix("mount -t "), "mounts prints a mount command: \(command)")
            try #require(try Command.run(["sh", "-c", command]).succeeded)
            do {
                defer { unmountAll(under: target) }
                try Self.expectBusyboxTree(target)
                try "new file\n".write(toFile: "\(target)/srv/berth-test/new.txt", atomically: false, encoding: .utf8)
                try FileManager.default.removeItem(atPath: "\(target)/srv/berth-test/keep.txt")
            }

            // The diff of the active snapshot against its parent: ctr prints the gzip layer,
            // which the diff service stored in content.
            let layer = "\(daemon.directory)/layer.tar.gz"
            let diff = try Command.run(["sh", "-c", "ctr --address \(daemon.socket) snapshots --snapshotter \(snapshotter) diff --keep work > \(layer)"])
            #expect(diff.succeeded, "snapshots diff: \(diff)")
            let listing = try Command.run(["tar", "-tzvf", layer]).stdout
            #expect(listing.contains("srv/berth-test/new.txt"), "layer lists the new file: \(listing)")
            #expect(listing.contains("srv/berth-test/.wh.keep.txt"), "layer whiteouts the removed file: \(listing)")
            #expect(!listing.contains("bin/busybox"), "unchanged files are not in the layer: \(listing)")
            let content = try daemon.ctrOK(["content", "ls"])
            #expect(content.contains("containerd.io/uncompressed=sha256:"), "content ls: \(content)")

            try daemon.ctrOK(ss + ["commit", "work-committed", "work"])
            // The commit removes the active snapshot and so schedules a collection, at most
            // GarbageCollector.maximumSpacing (1 s) later. A view is held by no lease or label,
            // so that collection would take it, as containerd's would: let it run first.
            try await Task.sleep(for: .seconds(1.5))
            try daemon.ctrOK(ss + ["view", "work-view", "work-committed"])
            let failed = try daemon.ctr(ss + ["rm", "work-committed"])
            #expect(!failed.succeeded && failed.stderr.contains("failed precondition"), "rm with children: \(failed.stderr)")
            try daemon.ctrOK(ss + ["rm", "work-view"])
            try daemon.ctrOK(ss + ["rm", "work-committed"])
            #expect(try Self.snapshotRows(daemon, snapshotter).count == 3)
            #expect(Self.storedSnapshots(daemon, snapshotter).count == 3)
        }
    }

    @Test("snapshots unpack of an image imported without unpacking", arguments: snapshotters)
    func snapshotsUnpack(snapshotter: String) async throws {
        let images = try TestImages.build()
        defer { images.remove() }
        try await withDaemon { daemon in
            try daemon.ctrOK(["images", "import", "--no-unpack", images.ociArchive])
            #expect(try Self.snapshotRows(daemon, snapshotter).isEmpty)
            let listing = try daemon.ctrOK(["images", "ls"])
            let digest = try #require(listing.split(separator: " ").first { $0.hasPrefix("sha256:") })
            let output = try daemon.ctrOK(["snapshots", "unpack", "--snapshotter", snapshotter, String(digest)])
            #expect(output.contains("done"), "unpack: \(output)")
            #expect(try Self.snapshotRows(daemon, snapshotter).count == 3)
            let target = "\(daemon.directory)/mnt"
            try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
            try daemon.ctrOK(["images", "mount", "--snapshotter", snapshotter, "docker.io/library/busybox:1", target])
            defer { _ = try? daemon.ctr(["images", "unmount", "--rm", target]) }
            try Self.expectBusyboxTree(target)
        }
    }

    @Test("containers create prepares the rootfs snapshot; rm removes it; GC keeps what a container uses", arguments: snapshotters)
    func containers(snapshotter: String) async throws {
        let images = try TestImages.build()
        defer { images.remove() }
        try await withDaemon { daemon in
            try daemon.ctrOK(["images", "import", "--snapshotter", snapshotter, images.ociArchive])
            let image = "docker.io/library/busybox:1"
            try daemon.ctrOK(["containers", "create", "--snapshotter", snapshotter, image, "c1"])
            let info = try daemon.ctrOK(["containers", "info", "c1"])
            #expect(info.contains("\"SnapshotKey\": \"c1\""), "container info: \(info)")
            #expect(try daemon.ctrOK(["containers", "ls"]).contains("c1"))
            try daemon.ctrOK(["containers", "label", "c1", "tier=test"])
            #expect(try daemon.ctrOK(["containers", "info", "c1"]).contains("\"tier\": \"test\""))
            var rows = try Self.snapshotRows(daemon, snapshotter)
            #expect(rows.contains { $0.first == "c1" && $0.last == "Active" }, "c1's snapshot: \(rows)")

            // The image goes; the container keeps its snapshot and the chain under it.
            try daemon.ctrOK(["images", "rm", "--sync", image])
            rows = try Self.snapshotRows(daemon, snapshotter)
            #expect(rows.count == 4, "container snapshot and its three parents kept: \(rows)")

            try daemon.ctrOK(["containers", "rm", "c1"])
            rows = try Self.snapshotRows(daemon, snapshotter)
            #expect(!rows.contains { $0.first == "c1" })
            // The next collection removes the chain no one uses any more.
            try daemon.ctrOK(["leases", "create", "--id", "trigger"])
            try daemon.ctrOK(["leases", "rm", "--sync", "trigger"])
            #expect(try Self.snapshotRows(daemon, snapshotter).isEmpty)
            #expect(Self.storedSnapshots(daemon, snapshotter).isEmpty)
        }
    }
}
