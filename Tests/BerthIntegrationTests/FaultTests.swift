import BerthTestSupport
import Foundation
import Testing

@Suite("faults: crashes and interruptions", .serialized)
struct FaultTests {
    /// Whether `ctr content active` lists an ingest that holds some bytes.
    static func hasPartialIngest(_ daemon: DaemonProcess) throws -> Bool {
        let active = try daemon.ctr(["content", "active"], timeout: .seconds(10))
        return active.stdout.split(separator: "\n").dropFirst().contains { line in
            let fields = line.split(whereSeparator: { $0 == "\t" || $0 == " " })
            return fields.count > 1 && fields[1] != "0B"
        }
    }

    /// Polls until an ingest has written something while `running` still writes.
    static func waitForPartialIngest(_ daemon: DaemonProcess, while running: RunningCommand) throws {
        for _ in 0..<2000 {
            if try hasPartialIngest(daemon) { return }
            guard running.isRunning else { throw TestSupportError.failed("the writer finished before it could be interrupted") }
            usleep(10_000)
        }
        throw TestSupportError.timeout("no partial ingest appeared")
    }

    @Test("kill -9 of berthd during a write leaves a consistent store, and the ingest resumes")
    func crashDuringWrite() async throws {
        try await withDaemon { daemon in
            let size = 768 << 20
            let blob = try ContentTests.randomFile(in: daemon.directory, size: size)
            defer { try? FileManager.default.removeItem(atPath: blob.path) }
            let arguments = ["ctr", "--address", daemon.socket, "content", "ingest", "--expected-size", "\(size)",
                             "--expected-digest", blob.digest, "crash-ref"]
            let writer = try Command.start(arguments, stdinFile: blob.path)
            defer { writer.stop(signal: SIGKILL) }
            try Self.waitForPartialIngest(daemon, while: writer)
            daemon.crash()
            writer.stop(signal: SIGKILL)

            try daemon.start()
            // No partial blob is visible; the interrupted ingest is still there to resume.
            #expect(!(try daemon.ctrOK(["content", "ls", "-q"])).contains(blob.digest))
            let active = try daemon.ctrOK(["content", "active"])
            #expect(active.contains("crash-ref"))
            #expect(!(ImageTests.blobFiles(daemon).contains(String(blob.digest.dropFirst(7)))))

            let resumed = try Command.run(arguments, stdinFile: blob.path, timeout: .seconds(600))
            #expect(resumed.succeeded, "\(resumed)")
            #expect(try daemon.ctrOK(["content", "ls", "-q"]).contains(blob.digest))
            #expect(daemon.fullLog.contains("resuming ingest"))
            #expect(!(try daemon.ctrOK(["content", "active"])).contains("crash-ref"))
        }
    }

    @Test("an interrupted content fetch of a large blob resumes where it stopped")
    func interruptedFetchResumes() async throws {
        let images = try TestImages.build(bigMegabytes: 400)
        defer { images.remove() }
        let registry = try LocalRegistry()
        defer { registry.stop() }
        try registry.push(images)
        // The loopback registry is fast: a kill can land just after a blob completes, leaving
        // nothing partial. Such attempts prove nothing and are repeated on a fresh daemon.
        var interrupted = false
        for _ in 0..<8 where !interrupted {
            try await withDaemon { daemon in
                let arguments = ["ctr", "--address", daemon.socket, "content", "fetch", "--plain-http", "\(registry.host)/big:1"]
                let fetch = try Command.start(arguments)
                try Self.waitForPartialIngest(daemon, while: fetch)
                fetch.stop(signal: SIGKILL)
                guard try Self.hasPartialIngest(daemon) else { return }
                interrupted = true

                let again = try Command.run(arguments, timeout: .seconds(600))
                #expect(again.succeeded, "\(again)")
                #expect(daemon.fullLog.contains("resuming ingest"))
                #expect(try daemon.ctrOK(["images", "ls", "-q"]).contains("big:1"))
                #expect(try daemon.ctrOK(["content", "ls", "-q"]).split(separator: "\n").count >= 5)
                #expect(try daemon.ctrOK(["content", "active"]).split(separator: "\n").dropFirst().isEmpty)
            }
        }
        #expect(interrupted, "no attempt left a partial ingest to resume")
    }

    @Test("the database and blobs survive a crash with no work in flight")
    func crashAtRest() async throws {
        let images = try TestImages.build()
        defer { images.remove() }
        try await withDaemon { daemon in
            try daemon.ctrOK(["images", "import", "--no-unpack", images.ociArchive])
            // The import's lease is gone, so collection soon removes the blobs no image holds
            // (ctr writes a transient index); wait until the listing has not changed for 2 s,
            // longer than collection's spacing after a quick run (up to 1 s).
            var before = try daemon.ctrOK(["content", "ls", "-q"])
            var unchanged = 0
            for _ in 0..<100 where unchanged < 10 {
                usleep(200_000)
                let now = try daemon.ctrOK(["content", "ls", "-q"])
                unchanged = now == before ? unchanged + 1 : 0
                before = now
            }
            daemon.crash()
            try daemon.start()
            #expect(try daemon.ctrOK(["content", "ls", "-q"]) == before)
            #expect(try daemon.ctrOK(["images", "ls", "-q"]).contains("docker.io/library/busybox:1"))
        }
    }
}
