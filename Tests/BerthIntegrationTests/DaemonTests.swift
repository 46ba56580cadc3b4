import BerthTestSupport
import Foundation
import Testing

/// berthd as a process: flags, config, start-up, shutdown, and the basic client calls.
@Suite("berthd process", .serialized)
struct DaemonTests {
    @Test("ctr version and plugins ls answer")
    func versionAndPlugins() async throws {
        try await withDaemon { daemon in
            let version = try daemon.ctrOK(["version"])
            #expect(version.contains("Server:"))
            #expect(version.contains("Version:  0.1.0"))
            #expect(version.range(of: #"UUID: [0-9a-f-]{36}"#, options: .regularExpression) != nil)
            let plugins = try daemon.ctrOK(["plugins", "ls"])
            #expect(plugins.contains("io.containerd.content.v1"))
            #expect(plugins.contains("io.containerd.grpc.v1"))
            let filtered = try daemon.ctrOK(["plugins", "ls", "type==io.containerd.grpc.v1"])
            #expect(!filtered.contains("io.containerd.content.v1"))
        }
    }

    @Test("the server UUID survives a restart")
    func uuidPersists() async throws {
        try await withDaemon { daemon in
            let first = try daemon.ctrOK(["version"]).split(separator: "\n").first { $0.contains("UUID") }
            daemon.stop()
            try daemon.start()
            let second = try daemon.ctrOK(["version"]).split(separator: "\n").first { $0.contains("UUID") }
            #expect(first != nil && first == second)
        }
    }

    @Test("a second berthd on the same root fails fast and leaves the first serving")
    func secondInstanceRefused() async throws {
        try await withDaemon { daemon in
            let result = try Command.run(try daemon.arguments, timeout: .seconds(20))
            #expect(result.status != 0)
            #expect(result.stderr.contains("another berthd"))
            try daemon.ctrOK(["version"])
        }
    }

    @Test("SIGTERM shuts down gracefully and removes the socket")
    func gracefulShutdown() async throws {
        try await withDaemon { daemon in
            #expect(FileManager.default.fileExists(atPath: daemon.socket))
            daemon.stop()
            #expect(!FileManager.default.fileExists(atPath: daemon.socket))
            #expect(daemon.fullLog.contains("berthd stopped"))
        }
    }

    @Test("SIGTERM ends open event subscriptions instead of waiting for them")
    func shutdownWithSubscriber() async throws {
        try await withDaemon { daemon in
            let events = try Command.start(["ctr", "--address", daemon.socket, "events"])
            defer { events.stop(signal: SIGKILL) }
            usleep(300_000)
            let started = ContinuousClock.now
            daemon.stop()
            #expect(ContinuousClock.now - started < .seconds(10))
            #expect(!FileManager.default.fileExists(atPath: daemon.socket))
        }
    }

    @Test("config default prints containerd's keys, and a config file is honoured")
    func configFile() async throws {
        let printed = try Command.run([try TestEnvironment.berthd(), "config", "default"])
        #expect(printed.succeeded)
        #expect(printed.stdout.contains("version = 2"))
        #expect(printed.stdout.contains("[grpc]"))
        #expect(printed.stdout.contains("address = \"/run/berth/berthd.sock\""))

        let dir = try TestEnvironment.makeTemporaryDirectory("berth-cfg")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = """
        version = 2
        root = "\(dir)/r"
        state = "\(dir)/s"
        [grpc]
          address = "\(dir)/x.sock"

        """
        try config.write(toFile: "\(dir)/config.toml", atomically: true, encoding: .utf8)
        let daemon = try Command.start([try TestEnvironment.berthd(), "--config", "\(dir)/config.toml"])
        defer { daemon.stop() }
        var answered = false
        for _ in 0..<200 where !answered {
            answered = (try? Command.run(["ctr", "--address", "\(dir)/x.sock", "--connect-timeout", "2s", "version"]))?.succeeded ?? false
            if !answered { usleep(50_000) }
        }
        #expect(answered)
        #expect(FileManager.default.fileExists(atPath: "\(dir)/r/metadata.db"))
        let mode = try FileManager.default.attributesOfItem(atPath: "\(dir)/x.sock")[.posixPermissions] as? Int
        #expect(mode == 0o660)

        let bad = try Command.run([try TestEnvironment.berthd(), "--config", "\(dir)/missing.toml"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("missing.toml"))
    }
}
