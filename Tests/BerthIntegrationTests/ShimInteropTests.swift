import BerthTestSupport
import Foundation
import Testing

/// Debian's containerd 1.6.20 driving berth-shim, checked through Debian's ctr.
///
/// containerd runs in a private mount namespace without `/sys/fs/cgroup/unified` (so crun sees
/// pure cgroup v1; see shared/reference/ctr-api-surface.md), with a PATH whose
/// `containerd-shim-runc-v2` is a symlink to berth-shim: the default runtime
/// `io.containerd.runc.v2` then resolves to berth-shim, which `--runc-binary crun` needs (ctr
/// allows that flag only for that runtime name). One test also passes berth-shim by absolute path.
@Suite("berth-shim under containerd 1.6", .serialized)
struct ShimInteropTests {
    static let image = "docker.io/library/busybox:1"

    /// The berth-shim binary: `BERTH_SHIM`, else a build beside the repository.
    static func shimBinary() throws -> String {
        if let path = ProcessInfo.processInfo.environment["BERTH_SHIM"], !path.isEmpty { return path }
        let repo = TestEnvironment.repository
        for candidate in ["\(repo)/.build-shim/debug/berth-shim", "\(repo)/.build/debug/berth-shim",
                          "\(repo)/.build-shim/release/berth-shim", "\(repo)/.build/release/berth-shim"]
        where FileManager.default.isExecutableFile(atPath: candidate) {
            return candidate
        }
        throw TestSupportError.missingPrerequisite("berth-shim binary (swift build --product berth-shim, or set BERTH_SHIM)")
    }

    /// containerd with its own root, state, sockets and PATH, in its own mount namespace.
    final class Containerd: @unchecked Sendable {
        let directory: String
        let shim: String
        var socket: String { "\(directory)/c.sock" }
        var logPath: String { "\(directory)/containerd.log" }
        private var process: Process?
        /// Container init pids seen, killed by PID at clean-up if still there.
        var containerPIDs: Set<Int32> = []

        init() throws {
            shim = try ShimInteropTests.shimBinary()
            directory = try TestEnvironment.makeTemporaryDirectory("berth-shimit")
            try FileManager.default.createDirectory(atPath: "\(directory)/bin", withIntermediateDirectories: true)
            try FileManager.default.createSymbolicLink(atPath: "\(directory)/bin/containerd-shim-runc-v2", withDestinationPath: shim)
            let config = """
            version = 2
            root = "\(directory)/root"
            state = "\(directory)/state"
            disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                                "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
            [grpc]
              address = "\(socket)"
            [ttrpc]
              address = "\(socket).ttrpc"

            """
            try config.write(toFile: "\(directory)/config.toml", atomically: true, encoding: .utf8)
        }

        func start() throws {
            let containerd = try Command.which("containerd")
            _ = FileManager.default.createFile(atPath: logPath, contents: nil)
            let log = FileHandle(forWritingAtPath: logPath)!
            let process = Process()
            process.executableURL = URL(fileURLWithPath: try Command.which("unshare"))
            let path = "\(directory)/bin:" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin")
            process.arguments = ["-m", "--propagation", "private", "sh", "-c",
                                 "umount /sys/fs/cgroup/unified 2>/dev/null; PATH='\(path)' exec '\(containerd)' --config '\(directory)/config.toml' --log-level debug"]
            process.standardOutput = log
            process.standardError = log
            process.standardInput = FileHandle.nullDevice
            try process.run()
            self.process = process
            let deadline = ContinuousClock.now + .seconds(30)
            while ContinuousClock.now < deadline {
                guard process.isRunning else { throw TestSupportError.failed("containerd exited:\n\(self.log)") }
                if FileManager.default.fileExists(atPath: socket), let r = try? ctr(["version"], timeout: .seconds(5)), r.succeeded {
                    return
                }
                usleep(50_000)
            }
            throw TestSupportError.timeout("containerd on \(socket):\n\(self.log)")
        }

        var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

        @discardableResult
        func ctr(_ arguments: [String], stdinFile: String? = nil, timeout: Duration = .seconds(60)) throws -> CommandResult {
            try Command.run(["ctr", "--address", socket, "--connect-timeout", "5s"] + arguments, stdinFile: stdinFile, timeout: timeout)
        }

        @discardableResult
        func ctrOK(_ arguments: [String], timeout: Duration = .seconds(60)) throws -> String {
            let result = try ctr(arguments, timeout: timeout)
            guard result.succeeded else {
                throw TestSupportError.failed("\(result)\ncontainerd log:\n\(log.split(separator: "\n").suffix(15).joined(separator: "\n"))")
            }
            return result.stdout
        }

        /// The pid of each task, from `ctr task ls`.
        func taskPIDs() -> [String: Int32] {
            guard let listing = try? ctr(["task", "ls"], timeout: .seconds(10)).stdout else { return [:] }
            var pids: [String: Int32] = [:]
            for line in listing.split(separator: "\n").dropFirst() {
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                if fields.count >= 2, let pid = Int32(fields[1]) { pids[String(fields[0])] = pid }
            }
            return pids
        }

        /// Shim processes of this daemon: their command line names its socket (a unique path).
        func shimPIDs() -> [Int32] {
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
            return entries.compactMap(Int32.init).filter { pid in
                guard let raw = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
                let text = String(decoding: raw.map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
                return text.contains("-address \(socket)") && !text.hasPrefix("ctr ")
            }
        }

        /// Kills leftover containers and shims (by recorded PID), stops containerd, removes the
        /// directory (its mounts lived in containerd's namespace and die with it).
        func cleanUp() {
            for pid in containerPIDs.union(taskPIDs().values) where pid > 1 { kill(pid, SIGKILL) }
            for pid in shimPIDs() { kill(pid, SIGKILL) }
            if let process, process.isRunning {
                kill(process.processIdentifier, SIGTERM)
                let deadline = ContinuousClock.now + .seconds(10)
                while process.isRunning && ContinuousClock.now < deadline { usleep(20_000) }
                if process.isRunning { kill(process.processIdentifier, SIGKILL) }
                process.waitUntilExit()
            }
            unmountAll(under: directory)
            if mountPoints(under: directory).isEmpty { try? FileManager.default.removeItem(atPath: directory) }
        }
    }

    static func withContainerd(_ body: (Containerd) throws -> Void) throws {
        let images = try TestImages.build()
        defer { images.remove() }
        let containerd = try Containerd()
        defer { containerd.cleanUp() }
        try containerd.start()
        try containerd.ctrOK(["images", "import", images.ociArchive], timeout: .seconds(120))
        try body(containerd)
    }

    @Test("ctr run --rm: output, exit status, runtime errors; berth-shim by absolute path and by runtime name")
    func runAndExitStatus() throws {
        try Self.withContainerd { ctd in
            let hi = try ctd.ctr(["run", "--rm", "--runtime", ctd.shim, Self.image, "t1", "echo", "hi"])
            #expect(hi.status == 0, "\(hi)")
            #expect(hi.stdout == "hi\n")

            let three = try ctd.ctr(["run", "--rm", Self.image, "t2", "sh", "-c", "echo out; echo err >&2; exit 3"])
            #expect(three.status == 3, "\(three)")
            #expect(three.stdout == "out\n")
            #expect(three.stderr.contains("err"))

            let missing = try ctd.ctr(["run", "--rm", Self.image, "t3", "nonexistent-binary"])
            #expect(missing.status != 0)
            #expect(missing.stderr.contains("OCI runtime create failed"), "\(missing)")
            #expect(missing.stderr.contains("executable file not found"), "\(missing)")
            _ = try? ctd.ctr(["container", "rm", "t3"])

            // The tasks really ran under berth-shim, and every shim has exited.
            #expect(ctd.log.contains("berth-shim: Create"), "containerd's shim log shows no berth-shim")
            let deadline = ContinuousClock.now + .seconds(10)
            while !ctd.shimPIDs().isEmpty && ContinuousClock.now < deadline { usleep(50_000) }
            #expect(ctd.shimPIDs().isEmpty, "shims left: \(ctd.shimPIDs())")
        }
    }

    @Test("ctr run -d, task ls/ps/exec/pause/resume/metrics/kill/delete")
    func detachedLifecycle() throws {
        try Self.withContainerd { ctd in
            try ctd.ctrOK(["run", "-d", Self.image, "d1", "sleep", "1000"])
            let pid = try #require(ctd.taskPIDs()["d1"])
            ctd.containerPIDs.insert(pid)
            #expect(try ctd.ctrOK(["task", "ls"]).contains("RUNNING"))
            #expect(try ctd.ctrOK(["task", "ps", "d1"]).contains(String(pid)))

            let exec = try ctd.ctr(["task", "exec", "--exec-id", "e1", "d1", "sh", "-c", "echo from-exec; exit 5"])
            #expect(exec.status == 5, "\(exec)")
            #expect(exec.stdout == "from-exec\n")

            try ctd.ctrOK(["task", "pause", "d1"])
            #expect(try ctd.ctrOK(["task", "ls"]).contains("PAUSED"))
            try ctd.ctrOK(["task", "resume", "d1"])
            #expect(try ctd.ctrOK(["task", "ls"]).contains("RUNNING"))

            let metrics = try ctd.ctrOK(["task", "metrics", "d1"])
            #expect(metrics.contains("memory.usage_in_bytes"), "\(metrics)")
            #expect(metrics.contains("pids.current"), "\(metrics)")

            let deleteRunning = try ctd.ctr(["task", "delete", "d1"])
            #expect(deleteRunning.status != 0)

            try ctd.ctrOK(["task", "kill", "-s", "SIGKILL", "d1"])
            let deadline = ContinuousClock.now + .seconds(10)
            while !(try ctd.ctrOK(["task", "ls"]).contains("STOPPED")) && ContinuousClock.now < deadline { usleep(50_000) }
            #expect(try ctd.ctrOK(["task", "ls"]).contains("STOPPED"))
            try ctd.ctrOK(["task", "delete", "d1"])
            #expect(!(try ctd.ctrOK(["task", "ls"]).contains("d1")))
            try ctd.ctrOK(["container", "rm", "d1"])
            #expect(kill(pid, 0) != 0, "container process \(pid) survived")
        }
    }

    @Test("--runc-binary crun runs a container through berth-shim")
    func crun() throws {
        _ = try Command.which("crun")
        try Self.withContainerd { ctd in
            let result = try ctd.ctr(["run", "--rm", "--runc-binary", "crun", Self.image, "c1", "sh", "-c", "echo via-crun; exit 4"])
            #expect(result.status == 4, "\(result)")
            #expect(result.stdout == "via-crun\n")
            #expect(ctd.log.contains("berth-shim: Create"))
        }
    }
}
