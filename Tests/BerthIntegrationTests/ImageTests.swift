import BerthTestSupport
import Foundation
import Testing

@Suite("images through ctr")
struct ImageTests {
    static func blobFiles(_ daemon: DaemonProcess) -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: "\(daemon.root)/content/blobs/sha256")) ?? []
    }

    @Test("import OCI and docker archives, ls, label, rm --sync removes their blobs")
    func importAndRemove() async throws {
        let images = try TestImages.build()
        defer { images.remove() }
        try await withDaemon { daemon in
            try daemon.ctrOK(["images", "import", "--no-unpack", images.ociArchive])
            var listing = try daemon.ctrOK(["images", "ls"])
            #expect(listing.contains("docker.io/library/busybox:1"))
            #expect(listing.contains("application/vnd.oci.image.manifest.v1+json"))
            #expect(listing.contains("linux/amd64"))

            try daemon.ctrOK(["images", "import", "--no-unpack", "--base-name", "example.com/dock", images.dockerArchive])
            listing = try daemon.ctrOK(["images", "ls", "-q"])
            #expect(listing.contains("docker.io/library/busybox:1"))

            try daemon.ctrOK(["images", "label", "docker.io/library/busybox:1", "stage=test"])
            #expect(try daemon.ctrOK(["images", "ls", "-q", "labels.stage==test"]).contains("docker.io/library/busybox:1"))

            #expect(!Self.blobFiles(daemon).isEmpty)
            for name in try daemon.ctrOK(["images", "ls", "-q"]).split(separator: "\n") {
                try daemon.ctrOK(["images", "rm", "--sync", String(name)])
            }
            #expect(try daemon.ctrOK(["images", "ls", "-q"]).isEmpty)
            #expect(try daemon.ctrOK(["content", "ls", "-q"]).isEmpty)
            #expect(Self.blobFiles(daemon).isEmpty, "blobs left on disk: \(Self.blobFiles(daemon))")

            let missing = try daemon.ctr(["images", "rm", "docker.io/library/nope:1"])
            #expect(missing.stderr.contains("not found"))
        }
    }

    @Test("an export from berthd imports into containerd with the same digests")
    func exportIntoContainerd() async throws {
        let images = try TestImages.build()
        defer { images.remove() }
        let containerd = try DaemonProcess.containerd()
        defer { containerd.cleanUp() }
        try containerd.start()
        try await withDaemon { daemon in
            try daemon.ctrOK(["images", "import", "--no-unpack", images.ociArchive])
            let exported = "\(daemon.directory)/export.tar"
            try daemon.ctrOK(["images", "export", exported, "docker.io/library/busybox:1"])
            try containerd.ctrOK(["images", "import", "--no-unpack", exported])
            let ours = try daemon.ctrOK(["images", "ls"])
            let theirs = try containerd.ctrOK(["images", "ls"])
            let digest = { (text: String) in text.split(separator: " ").first { $0.hasPrefix("sha256:") } }
            #expect(digest(ours) != nil)
            #expect(digest(ours) == digest(theirs))
            // The archive's index, which ctr stored under the import's lease, goes with the
            // collection that the lease's deletion schedules (containerd may still hold its own).
            let content = { Set((try? daemon.ctrOK(["content", "ls", "-q"]))?.split(separator: "\n") ?? []) }
            #expect(TaskOptionsTests.eventually { content().count == 5 }, "\(content())")
            let ourContent = content()
            let theirContent = Set(try containerd.ctrOK(["content", "ls", "-q"]).split(separator: "\n"))
            #expect(ourContent.isSubset(of: theirContent), "missing in containerd: \(ourContent.subtracting(theirContent))")
        }
    }

    @Test("a truncated or corrupt archive is rejected and stores nothing")
    func badArchives() async throws {
        let images = try TestImages.build()
        defer { images.remove() }
        try await withDaemon { daemon in
            let size = try FileManager.default.attributesOfItem(atPath: images.ociArchive)[.size] as! Int
            let truncated = "\(daemon.directory)/truncated.tar"
            try Command.run(["sh", "-c", "head -c \(size / 2) \(images.ociArchive) > \(truncated)"])
            let result = try daemon.ctr(["images", "import", "--no-unpack", truncated])
            #expect(!result.succeeded)
            try Self.expectEmpty(daemon)

            // Corrupt the manifest inside the archive: the importer writes blobs under the digest
            // of what it reads, so the index now names a manifest the store does not have.
            let corrupt = "\(daemon.directory)/corrupt"
            try Command.run(["sh", "-c", """
                mkdir -p \(corrupt) && cd \(corrupt) && tar -xf \(images.ociArchive) && \
                m=$(grep -o 'sha256:[0-9a-f]*' index.json | head -1 | cut -d: -f2) && \
                printf 'XXXX' | dd of=blobs/sha256/$m bs=1 seek=10 conv=notrunc 2>/dev/null && \
                tar -cf ../corrupt.tar .
                """])
            let corrupted = try daemon.ctr(["images", "import", "--no-unpack", "\(daemon.directory)/corrupt.tar"])
            #expect(!corrupted.succeeded)
            #expect(corrupted.stderr.contains("not found"), "\(corrupted)")
            try Self.expectEmpty(daemon)
        }
    }

    /// Whatever a failed import wrote is held by no lease once ctr gives up, so it is collected.
    static func expectEmpty(_ daemon: DaemonProcess) throws {
        var leftovers: [Substring] = []
        for _ in 0..<100 {
            leftovers = try daemon.ctrOK(["content", "ls", "-q"]).split(separator: "\n")
            if leftovers.isEmpty && blobFiles(daemon).isEmpty { break }
            usleep(50_000)
        }
        #expect(leftovers.isEmpty)
        #expect(blobFiles(daemon).isEmpty)
        #expect(try daemon.ctrOK(["images", "ls", "-q"]).isEmpty)
        #expect(try daemon.ctrOK(["leases", "ls", "-q"]).isEmpty)
    }
}
