import BerthTestSupport
import Foundation
import Testing

@Suite("content through ctr")
struct ContentTests {
    /// A file of `size` random bytes and its digest.
    static func randomFile(in directory: String, size: Int) throws -> (path: String, digest: String) {
        let path = "\(directory)/blob-\(size)"
        let result = try Command.run(["sh", "-c", "head -c \(size) /dev/urandom > \(path) && sha256sum \(path)"])
        guard result.succeeded, let hex = result.stdout.split(separator: " ").first else { throw TestSupportError.failed("\(result)") }
        return (path, "sha256:\(hex)")
    }

    @Test("content fetch of a multi-layer image from a loopback registry, then ls, get, label, rm")
    func fetchAndManage() async throws {
        let images = try TestImages.build()
        defer { images.remove() }
        let registry = try LocalRegistry()
        defer { registry.stop() }
        try registry.push(images)
        try await withDaemon { daemon in
            let ref = "\(registry.host)/busybox:1"
            try daemon.ctrOK(["content", "fetch", "--plain-http", ref])
            let listing = try daemon.ctrOK(["content", "ls", "-q"]).split(separator: "\n").map(String.init)
            #expect(listing.count == 5, "manifest, config and three layers: \(listing)")
            let imagesListing = try daemon.ctrOK(["images", "ls"])
            #expect(imagesListing.contains(ref))

            // Every blob reads back with its digest.
            for digest in listing {
                let check = try Command.run(["sh", "-c", "ctr --address \(daemon.socket) content get \(digest) | sha256sum"])
                #expect(check.stdout.hasPrefix(String(digest.dropFirst("sha256:".count))), "\(digest) reads back wrong")
            }

            let manifestLabels = try daemon.ctrOK(["content", "ls"])
            #expect(manifestLabels.contains("containerd.io/gc.ref.content.config="))

            try daemon.ctrOK(["content", "label", listing[0], "team=blue"])
            let filtered = try daemon.ctrOK(["content", "ls", "-q", "labels.team==blue"])
            #expect(filtered.trimmingCharacters(in: .whitespacesAndNewlines) == listing[0])

            // Another namespace sees none of it until it asks for it.
            #expect(try daemon.ctrOK(["content", "ls", "-q"], namespace: "other").isEmpty)
            try daemon.ctrOK(["content", "fetch", "--plain-http", ref], namespace: "other")
            #expect(try daemon.ctrOK(["content", "ls", "-q"], namespace: "other").split(separator: "\n").count == 5)

            // Removing it from one namespace leaves the other's copy readable.
            try daemon.ctrOK(["images", "rm", "--sync", ref], namespace: "other")
            #expect(try daemon.ctrOK(["content", "ls", "-q"], namespace: "other").isEmpty)
            try daemon.ctrOK(["content", "get", listing[1]])

            try daemon.ctrOK(["content", "rm", listing[0]])
            let missing = try daemon.ctr(["content", "get", listing[0]])
            #expect(!missing.succeeded)
            #expect(missing.stderr.contains("not found"))
        }
    }

    @Test("ingest verifies size and digest; a mismatch stores nothing")
    func ingestVerification() async throws {
        try await withDaemon { daemon in
            let blob = try Self.randomFile(in: daemon.directory, size: 3 << 20)
            let wrongDigest = "sha256:" + String(repeating: "a", count: 64)
            let bad = try daemon.ctr(["content", "ingest", "--expected-size", "\(3 << 20)", "--expected-digest", wrongDigest, "ref-bad"],
                                     stdinFile: blob.path)
            #expect(!bad.succeeded)
            #expect(bad.stderr.contains("unexpected commit digest"))
            #expect(bad.stderr.contains("failed precondition"))
            #expect(try daemon.ctrOK(["content", "ls", "-q"]).isEmpty)

            let wrongSize = try daemon.ctr(["content", "ingest", "--expected-size", "12", "--expected-digest", blob.digest, "ref-size"],
                                           stdinFile: blob.path)
            #expect(!wrongSize.succeeded)
            #expect(try daemon.ctrOK(["content", "ls", "-q"]).isEmpty)

            try daemon.ctrOK(["content", "ingest", "--expected-size", "\(3 << 20)", "--expected-digest", blob.digest, "ref-good"],
                             stdinFile: blob.path)
            #expect(try daemon.ctrOK(["content", "ls", "-q"]).contains(blob.digest))
            // The daemon answers AlreadyExists before any data moves; ctr counts that as done.
            try daemon.ctrOK(["content", "ingest", "--expected-size", "\(3 << 20)", "--expected-digest", blob.digest, "ref-again"],
                             stdinFile: blob.path)
            #expect(daemon.fullLog.contains("content \(blob.digest): already exists"))
            #expect(!(try daemon.ctrOK(["content", "active"])).contains("ref-again"))
        }
    }

    @Test("malformed digests and filters are invalid arguments naming the field")
    func badInput() async throws {
        try await withDaemon { daemon in
            let digest = try daemon.ctr(["content", "get", "sha256:nothex"])
            #expect(!digest.succeeded)
            #expect(digest.stderr.contains("invalid argument") || digest.stderr.contains("invalid"))

            let info = try daemon.ctr(["content", "ls", "digest~=("])
            #expect(!info.succeeded)
            #expect(info.stderr.contains("filter"))
            #expect(info.stderr.contains("invalid argument"))

            let images = try daemon.ctr(["images", "ls", "name=="])
            #expect(!images.succeeded)
            #expect(images.stderr.contains("invalid argument"))

            let namespace = try daemon.ctr(["content", "ls"], namespace: "no/slashes")
            #expect(!namespace.succeeded)
            #expect(namespace.stderr.contains("namespace"))
        }
    }

    @Test("a 1 GiB blob uploads through ctr content ingest in one stream")
    func largeIngest() async throws {
        try await withDaemon { daemon in
            let blob = try Self.randomFile(in: daemon.directory, size: 1 << 30)
            try daemon.ctrOK(["content", "ingest", "--expected-size", "\(1 << 30)", "--expected-digest", blob.digest, "big"],
                             stdinFile: blob.path, timeout: .seconds(600))
            let listing = try daemon.ctrOK(["content", "ls"])
            #expect(listing.contains(blob.digest))
            try? FileManager.default.removeItem(atPath: blob.path)
        }
    }
}
