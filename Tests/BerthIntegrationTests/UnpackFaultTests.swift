import BerthTestSupport
import Foundation
import Testing

/// Unpacking under faults: a crash mid-unpack, a layer whose diff ID does not match, a full disk.
@Suite("unpack faults", .serialized)
struct UnpackFaultTests {
    /// Rewrites busybox-oci.tar into `output` with image name `name` and a wrong diff ID for the
    /// last layer (config, manifest and index rewritten so every digest still verifies).
    static func makeWrongDiffIDArchive(_ images: TestImages, name: String, output: String) throws {
        let script = """
            set -eu
            work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
            tar -xf "$1" -C "$work"; cd "$work"
            manifest=$(jq -r '.manifests[0].digest' index.json | cut -d: -f2)
            config=$(jq -r '.config.digest' blobs/sha256/$manifest | cut -d: -f2)
            wrong=sha256:$(printf wrong | sha256sum | cut -d' ' -f1)
            jq -c --arg w "$wrong" '.rootfs.diff_ids[-1] = $w' blobs/sha256/$config > new-config
            c=$(sha256sum new-config | cut -d' ' -f1); mv new-config blobs/sha256/$c
            jq -c --arg d "sha256:$c" --argjson s "$(stat -c %s blobs/sha256/$c)" '.config.digest = $d | .config.size = $s' \\
                blobs/sha256/$manifest > new-manifest
            m=$(sha256sum new-manifest | cut -d' ' -f1); mv new-manifest blobs/sha256/$m
            jq -c --arg d "sha256:$m" --argjson s "$(stat -c %s blobs/sha256/$m)" --arg n "$2" \\
                '.manifests[0].digest = $d | .manifests[0].size = $s | .manifests[0].annotations["io.containerd.image.name"] = $n' \\
                index.json > new-index
            mv new-index index.json
            tar -cf "$3" -C "$work" .
            """
        let result = try Command.run(["bash", "-c", script, "make-bad", images.ociArchive, name, output])
        guard result.succeeded else { throw TestSupportError.failed("\(result)") }
    }

    static func snapshotRows(_ daemon: DaemonProcess, _ snapshotter: String = "overlayfs") throws -> [[String]] {
        try UnpackTests.snapshotRows(daemon, snapshotter)
    }

    /// Runs a collection now, through a lease deleted with --sync.
    static func collect(_ daemon: DaemonProcess) throws {
        try daemon.ctrOK(["leases", "create", "--id", "collect-now"])
        try daemon.ctrOK(["leases", "rm", "--sync", "collect-now"])
    }

    @Test("a layer whose diff ID does not match is rejected and leaves nothing behind", arguments: UnpackTests.snapshotters)
    func wrongDiffID(snapshotter: String) async throws {
        let images = try TestImages.build()
        defer { images.remove() }
        try await withDaemon { daemon in
            let bad = "\(daemon.directory)/bad.tar"
            try Self.makeWrongDiffIDArchive(images, name: "docker.io/library/bad:1", output: bad)
            let result = try daemon.ctr(["images", "import", "--snapshotter", snapshotter, bad])
            #expect(!result.succeeded)
            #expect(result.stderr.contains("wrong diff id"), "ctr's error: \(result.stderr)")
            // No active snapshot is left; nothing committed carries the bad layer.
            var rows = try Self.snapshotRows(daemon, snapshotter)
            #expect(!rows.contains { $0.last == "Active" }, "active snapshots left: \(rows)")
            #expect(rows.count <= 2, "only the two good layers may stay committed: \(rows)")
            try daemon.ctrOK(["images", "rm", "--sync", "docker.io/library/bad:1"])
            try Self.collect(daemon)
            rows = try Self.snapshotRows(daemon, snapshotter)
            #expect(rows.isEmpty, "snapshots left: \(rows)")
            #expect(UnpackTests.storedSnapshots(daemon, snapshotter).isEmpty)
            // The good image still unpacks.
            try daemon.ctrOK(["images", "import", "--snapshotter", snapshotter, images.ociArchive])
            #expect(try Self.snapshotRows(daemon, snapshotter).count == 3)
        }
    }

    @Test("kill -9 of berthd during an unpack: no half-made snapshot; after restart the pull repeats")
    func crashDuringUnpack() async throws {
        let images = try TestImages.build(bigMegabytes: 120)
        defer { images.remove() }
        let registry = try LocalRegistry()
        defer { registry.stop() }
        try registry.push(images)
        try await withDaemon { daemon in
            let ref = "\(registry.host)/big:1"
            try daemon.ctrOK(["content", "fetch", "--plain-http", ref], timeout: .seconds(300))
            let pull = try Command.start(["ctr", "--address", daemon.socket, "images", "pull", "--plain-http", ref])
            defer { pull.stop(signal: SIGKILL) }
            // Wait until a layer is being applied (an extract snapshot exists), then crash.
            let deadline = ContinuousClock.now + .seconds(60)
            var sawExtract = false
            while ContinuousClock.now < deadline, pull.isRunning {
                if let rows = try? Self.snapshotRows(daemon), rows.contains(where: { $0.first?.hasPrefix("extract-") == true }) {
                    sawExtract = true
                    break
                }
                usleep(5_000)
            }
            #expect(sawExtract, "the pull reached an unpack")
            daemon.crash()
            pull.stop(signal: SIGKILL)

            try daemon.start()
            let rows = try Self.snapshotRows(daemon)
            // Every committed snapshot is complete; the interrupted one is at most an active
            // extract snapshot, which the client's lease holds.
            #expect(rows.filter { $0.last == "Committed" }.count <= 7)
            #expect(UnpackTests.storedSnapshots(daemon, "overlayfs").count == rows.count,
                    "storage matches the rows: \(UnpackTests.storedSnapshots(daemon, "overlayfs")) vs \(rows)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: "\(daemon.root)/tmp").isEmpty)

            try daemon.ctrOK(["images", "pull", "--plain-http", ref], timeout: .seconds(300))
            let check = try daemon.ctrOK(["images", "check"])
            #expect(check.contains("complete"))
            let target = "\(daemon.directory)/mnt"
            try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
            try daemon.ctrOK(["images", "mount", ref, target])
            defer { _ = try? daemon.ctr(["images", "unmount", "--rm", target]) }
            try UnpackTests.expectBusyboxTree(target)
        }
    }

    @Test("a full disk during unpack is a clear error and the store stays consistent")
    func diskFull() async throws {
        let images = try TestImages.build(bigMegabytes: 40)
        defer { images.remove() }
        let daemon = try DaemonProcess()
        defer { daemon.cleanUp() }
        // The whole root on a 72 MiB tmpfs: the blobs fit, their unpacked copy does not.
        try FileManager.default.createDirectory(atPath: daemon.root, withIntermediateDirectories: true)
        let mounted = try Command.run(["mount", "-t", "tmpfs", "-o", "size=72m,mode=0711", "tmpfs", daemon.root])
        try #require(mounted.succeeded, "mount tmpfs: \(mounted)")
        try daemon.start()
        let result = try daemon.ctr(["images", "import", images.bigArchive], timeout: .seconds(300))
        #expect(!result.succeeded)
        #expect(result.stderr.contains("no space left on device"), "ctr's error: \(result.stderr)")
        // Still serving, with the store readable. Whether ctr's own clean-up of its extract
        // snapshot got through depends on whether the database could still grow; the operator
        // frees space (here: a larger tmpfs), and then everything goes away cleanly.
        #expect(try daemon.ctrOK(["images", "ls", "-q"]).contains("docker.io/library/big:1"))
        let grown = try Command.run(["mount", "-o", "remount,size=256m", daemon.root])
        try #require(grown.succeeded, "remount: \(grown)")
        // ctr's own lease could not be deleted on the full disk either.
        for lease in try daemon.ctrOK(["leases", "ls", "-q"]).split(separator: "\n") {
            try daemon.ctrOK(["leases", "rm", String(lease)])
        }
        for row in try Self.snapshotRows(daemon) where row.last == "Active" {
            // ctr's extract keys hold a space: "extract-<n>-<id> <chain ID>".
            let key = row[0].hasPrefix("extract-") ? row[0] + " " + row[1] : row[0]
            try daemon.ctrOK(["snapshots", "rm", key])
        }
        for name in try daemon.ctrOK(["images", "ls", "-q"]).split(separator: "\n") {
            try daemon.ctrOK(["images", "rm", "--sync", String(name)])
        }
        try Self.collect(daemon)
        #expect(try Self.snapshotRows(daemon).isEmpty)
        #expect(UnpackTests.storedSnapshots(daemon, "overlayfs").isEmpty)
        #expect(try daemon.ctrOK(["content", "ls", "-q"]).isEmpty)
        try daemon.ctrOK(["images", "import", images.ociArchive])
        #expect(try Self.snapshotRows(daemon).count == 3)
    }
}
