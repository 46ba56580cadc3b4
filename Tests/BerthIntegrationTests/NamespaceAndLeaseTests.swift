import BerthTestSupport
import Foundation
import Testing

@Suite("namespaces, leases and events through ctr")
struct NamespaceAndLeaseTests {
    @Test("namespaces create, ls, label, rm with containerd's errors")
    func namespaces() async throws {
        try await withDaemon { daemon in
            try daemon.ctrOK(["namespaces", "create", "team-a", "owner=alice"])
            var listing = try daemon.ctrOK(["namespaces", "ls"])
            #expect(listing.contains("team-a"))
            #expect(listing.contains("owner=alice"))

            let duplicate = try daemon.ctr(["namespaces", "create", "team-a"])
            #expect(!duplicate.succeeded)
            #expect(duplicate.stderr.contains("namespace team-a: already exists"))

            try daemon.ctrOK(["namespaces", "label", "team-a", "tier=gold"])
            listing = try daemon.ctrOK(["namespaces", "ls"])
            #expect(listing.contains("tier=gold"))

            let invalid = try daemon.ctr(["namespaces", "create", "bad..name"])
            #expect(!invalid.succeeded)
            #expect(invalid.stderr.contains("invalid argument"))
            #expect(invalid.stderr.contains("namespace"))

            // A namespace holding an image cannot be removed.
            let images = try TestImages.build()
            defer { images.remove() }
            try daemon.ctrOK(["images", "import", "--no-unpack", images.ociArchive], namespace: "team-a")
            let busy = try daemon.ctr(["namespaces", "rm", "team-a"])
            #expect(!busy.succeeded)
            #expect(busy.stderr.contains("must be empty"))
            #expect(busy.stderr.contains("images"))
            #expect(busy.stderr.contains("failed precondition"))

            try daemon.ctrOK(["images", "rm", "--sync", "docker.io/library/busybox:1"], namespace: "team-a")
            try daemon.ctrOK(["namespaces", "rm", "team-a"])
            #expect(!(try daemon.ctrOK(["namespaces", "ls", "-q"])).contains("team-a"))

            // ctr treats NotFound on removal as done, so this only shows the code was NotFound.
            let missing = try daemon.ctr(["namespaces", "rm", "nope"])
            #expect(missing.succeeded)
            #expect(missing.stdout.contains("nope"))
        }
    }

    @Test("leases create, ls with filters, rm")
    func leases() async throws {
        try await withDaemon { daemon in
            let generated = try daemon.ctrOK(["leases", "create"]).trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(!generated.isEmpty)
            try daemon.ctrOK(["leases", "create", "--id", "build-1", "purpose=test"])
            let listing = try daemon.ctrOK(["leases", "ls"])
            #expect(listing.contains(generated))
            #expect(listing.contains("build-1"))
            #expect(listing.contains("containerd.io/gc.expire="))
            let filtered = try daemon.ctrOK(["leases", "ls", "-q", "labels.purpose==test"])
            #expect(filtered.trimmingCharacters(in: .whitespacesAndNewlines) == "build-1")
            try daemon.ctrOK(["leases", "rm", "build-1", generated])
            #expect(!(try daemon.ctrOK(["leases", "ls"])).contains("build-1"))
            let duplicate = try daemon.ctr(["leases", "rm", "build-1"])
            #expect(duplicate.stderr.contains("not found"))
        }
    }

    @Test("events shows the topics of mutations")
    func events() async throws {
        try await withDaemon { daemon in
            let subscriber = try Command.start(["ctr", "--address", daemon.socket, "events"])
            defer { subscriber.stop(signal: SIGKILL) }
            usleep(300_000)
            try daemon.ctrOK(["namespaces", "create", "evt"])
            try daemon.ctrOK(["namespaces", "label", "evt", "a=b"])
            let images = try TestImages.build()
            defer { images.remove() }
            try daemon.ctrOK(["images", "import", "--no-unpack", images.ociArchive], namespace: "evt")
            try daemon.ctrOK(["images", "label", "docker.io/library/busybox:1", "x=y"], namespace: "evt")
            let config = try daemon.ctrOK(["content", "ls", "-q"], namespace: "evt").split(separator: "\n").map(String.init)
            try #require(!config.isEmpty)
            try daemon.ctrOK(["content", "rm", config[0]], namespace: "evt")
            try daemon.ctrOK(["images", "rm", "--sync", "docker.io/library/busybox:1"], namespace: "evt")
            try daemon.ctrOK(["namespaces", "rm", "evt"])
            var output = ""
            for _ in 0..<100 {
                output = subscriber.stdoutSoFar
                if output.contains("/namespaces/delete") { break }
                usleep(50_000)
            }
            for topic in ["/namespaces/create", "/namespaces/update", "/images/create", "/images/update", "/images/delete",
                          "/content/delete", "/namespaces/delete"] {
                #expect(output.contains(topic), "events output lacks \(topic):\n\(output)")
            }
            #expect(output.contains("evt /images/create {\"name\":\"docker.io/library/busybox:1\""))
        }
    }
}
