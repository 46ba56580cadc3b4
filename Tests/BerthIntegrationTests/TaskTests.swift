import BerthAPI
import BerthTestSupport
import Foundation
import GRPCCore
import SwiftProtobuf
import Testing

/// Tasks through a runtime v2 shim, driven by Debian's ctr: every test runs twice, with berthd's
/// default for `io.containerd.runc.v2` (berth-shim, found beside berthd) and with Debian's
/// `containerd-shim-runc-v2` configured instead (interop: berthd drives any v2 shim).
///
/// Debian's shim keeps its socket under /run/containerd/s and runc's state under
/// /run/containerd/runc/<namespace>, whatever berthd's state directory is; each test therefore
/// uses its own namespace, and cleans up by it.
@Suite("tasks through a v2 shim", .serialized)
struct TaskTests {
    enum Shim: String, CaseIterable, CustomTestStringConvertible {
        case berth = "berth-shim"
        case containerd = "containerd-shim-runc-v2"
        var testDescription: String { rawValue }
    }

    static let containerdShim = "/usr/bin/containerd-shim-runc-v2"
    static let image = "docker.io/library/busybox:1"

    /// A berthd using `shim` for `io.containerd.runc.v2`, with the busybox image imported into a
    /// fresh namespace. Afterwards tasks, containers, shims (by PID) and runc state are gone, also
    /// when the test failed.
    func withTaskDaemon<T>(_ shim: Shim, _ body: (DaemonProcess, String) async throws -> T) async throws -> T {
        let berthShim = URL(fileURLWithPath: try TestEnvironment.berthd()).deletingLastPathComponent().appendingPathComponent("berth-shim").path
        let shimPath = shim == .berth ? berthShim : Self.containerdShim
        for binary in [shimPath, try Command.which("runc")] where !FileManager.default.isExecutableFile(atPath: binary) {
            throw TestSupportError.missingPrerequisite("\(binary) (apt-get install containerd runc; swift build builds berth-shim)")
        }
        let images = try TestImages.build()
        defer { images.remove() }
        let configDirectory = try TestEnvironment.makeTemporaryDirectory("berth-cfg")
        defer { try? FileManager.default.removeItem(atPath: configDirectory) }
        // berth-shim is berthd's default: its config names no shim.
        let config = shim == .berth ? "version = 2\n" : """
        version = 2
        [runtimes."io.containerd.runc.v2"]
          shim = "\(Self.containerdShim)"

        """
        try config.write(toFile: "\(configDirectory)/config.toml", atomically: true, encoding: .utf8)
        let daemon = try DaemonProcess(extraArguments: ["--config", "\(configDirectory)/config.toml"])
        let namespace = "bt" + UUID().uuidString.prefix(8).lowercased()
        defer {
            Self.cleanUp(daemon, namespace: namespace)
            daemon.cleanUp()
        }
        try daemon.start()
        try daemon.ctrOK(["images", "import", images.ociArchive], namespace: namespace)
        return try await body(daemon, namespace)
    }

    /// Removes what a test left: through ctr while berthd runs, then shims by their PIDs (found by
    /// their working directory, a bundle under this daemon's state), then runc's containers.
    static func cleanUp(_ daemon: DaemonProcess, namespace: String) {
        if daemon.process?.isRunning == true {
            let tasks = (try? daemon.ctr(["task", "ls", "-q"], namespace: namespace, timeout: .seconds(20)))?.stdout ?? ""
            for task in tasks.split(separator: "\n") {
                _ = try? daemon.ctr(["task", "rm", "-f", String(task)], namespace: namespace, timeout: .seconds(20))
            }
            let containers = (try? daemon.ctr(["containers", "ls", "-q"], namespace: namespace, timeout: .seconds(20)))?.stdout ?? ""
            for container in containers.split(separator: "\n") {
                _ = try? daemon.ctr(["containers", "rm", String(container)], namespace: namespace, timeout: .seconds(20))
            }
        }
        for (pid, bundle) in shimProcesses(daemon) {
            let address = (try? String(contentsOfFile: "\(bundle)/address", encoding: .utf8)) ?? ""
            kill(pid, SIGKILL)
            if address.hasPrefix("unix://") { unlink(String(address.dropFirst("unix://".count))) }
        }
        let runcRoot = "/run/containerd/runc/\(namespace)"
        for id in (try? FileManager.default.contentsOfDirectory(atPath: runcRoot)) ?? [] {
            _ = try? Command.run(["runc", "--root", runcRoot, "kill", id, "KILL"], timeout: .seconds(10))
            _ = try? Command.run(["runc", "--root", runcRoot, "delete", "--force", id], timeout: .seconds(10))
        }
        try? FileManager.default.removeItem(atPath: runcRoot)
        removeCgroups(namespace: namespace)
    }

    /// The runtime removes a container's cgroup `/<namespace>/<id>` but leaves the namespace's own
    /// (as with containerd); a test namespace's is removed here, in every hierarchy, deepest first.
    static func removeCgroups(namespace: String) {
        let hierarchies = ((try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? [])
            .map { "/sys/fs/cgroup/\($0)" } + ["/sys/fs/cgroup"]
        for hierarchy in hierarchies {
            let top = "\(hierarchy)/\(namespace)"
            guard let entries = FileManager.default.enumerator(atPath: top) else { continue }
            let directories = entries.compactMap { $0 as? String }
                .filter { (try? FileManager.default.attributesOfItem(atPath: "\(top)/\($0)")[.type] as? FileAttributeType) == .typeDirectory }
                .sorted { $0.count > $1.count }
            for directory in directories { rmdir("\(top)/\(directory)") }
            rmdir(top)
        }
    }

    /// Shim processes serving this daemon: their working directory is a bundle under its state.
    static func shimProcesses(_ daemon: DaemonProcess) -> [(pid: Int32, bundle: String)] {
        let prefix = "\(daemon.state)/shims/"
        return ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { name in
            guard let pid = Int32(name),
                  let cwd = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(name)/cwd"),
                  cwd.hasPrefix(prefix) else { return nil }
            return (pid, cwd)
        }
    }

    static func bundles(_ daemon: DaemonProcess, namespace: String) -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: "\(daemon.state)/shims/\(namespace)")) ?? []
    }

    /// The bundles once deleted tasks' bundles are gone: they go just after Delete answers, so
    /// this waits up to 5 s for the list to empty.
    static func settledBundles(_ daemon: DaemonProcess, namespace: String) -> [String] {
        for _ in 0..<50 where !bundles(daemon, namespace: namespace).isEmpty { usleep(100_000) }
        return bundles(daemon, namespace: namespace)
    }

    /// `ctr task ls` rows as id → (pid, status).
    static func tasks(_ daemon: DaemonProcess, namespace: String) throws -> [String: (pid: String, status: String)] {
        var rows: [String: (pid: String, status: String)] = [:]
        for line in try daemon.ctrOK(["task", "ls"], namespace: namespace).split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 3 else { continue }
            rows[String(fields[0])] = (String(fields[1]), String(fields[2]))
        }
        return rows
    }

    /// Polls `ctr task ls` until task `id` has `status`.
    static func waitForStatus(_ daemon: DaemonProcess, namespace: String, id: String, _ status: String) throws {
        for _ in 0..<100 {
            if try tasks(daemon, namespace: namespace)[id]?.status == status { return }
            usleep(100_000)
        }
        throw TestSupportError.timeout("task \(id) never became \(status): \(try daemon.ctrOK(["task", "ls"], namespace: namespace))")
    }

    @Test("ctr run --rm prints the output and exits with the container's code; nothing is left", arguments: Shim.allCases)
    func runRemove(shim: Shim) async throws {
        try await withTaskDaemon(shim) { daemon, namespace in
            let echo = try daemon.ctr(["run", "--rm", Self.image, "t1", "echo", "hi"], namespace: namespace, timeout: .seconds(60))
            #expect(echo.succeeded, "\(echo)\n\(daemon.log(tail: 30))")
            #expect(echo.stdout == "hi\n", "\(echo)")

            // The same id at once again: a deleted task's shim and bundle go after Delete answers,
            // and the next task of that id waits for them.
            for _ in 0..<3 {
                let exit = try daemon.ctr(["run", "--rm", Self.image, "t2", "sh", "-c", "exit 3"], namespace: namespace, timeout: .seconds(60))
                #expect(exit.status == 3, "\(exit)")
            }

            if shim == .berth {
                // crun refuses this host's hybrid cgroups; berth-shim runs it without the v2 mount.
                let crun = try daemon.ctr(["run", "--rm", "--runc-binary", "crun", Self.image, "t3", "sh", "-c", "echo from crun; exit 5"],
                                          namespace: namespace, timeout: .seconds(60))
                #expect(crun.status == 5, "\(crun)")
                #expect(crun.stdout == "from crun\n", "\(crun)")
            }

            #expect(try daemon.ctrOK(["containers", "ls", "-q"], namespace: namespace).isEmpty)
            #expect(try Self.tasks(daemon, namespace: namespace).isEmpty)
            #expect(Self.settledBundles(daemon, namespace: namespace).isEmpty)
            // A shim exits after Shutdown; give the last one a moment.
            for _ in 0..<50 where !Self.shimProcesses(daemon).isEmpty { usleep(100_000) }
            #expect(Self.shimProcesses(daemon).isEmpty, "shims left: \(Self.shimProcesses(daemon))\n\(daemon.log(tail: 60))")
        }
    }

    @Test("run -d, task ls/ps/exec/pause/resume/metrics/kill/rm", arguments: Shim.allCases)
    func detachedLifecycle(shim: Shim) async throws {
        try await withTaskDaemon(shim) { daemon, namespace in
            try daemon.ctrOK(["run", "-d", Self.image, "t2", "sleep", "3600"], namespace: namespace, timeout: .seconds(60))
            let listed = try Self.tasks(daemon, namespace: namespace)
            #expect(listed["t2"]?.status == "RUNNING", "\(listed)")
            let pid = try #require(listed["t2"]?.pid)
            #expect(Int(pid) ?? 0 > 0)
            #expect(Self.bundles(daemon, namespace: namespace) == ["t2"])
            let bundle = "\(daemon.state)/shims/\(namespace)/t2"
            #expect(FileManager.default.fileExists(atPath: "\(bundle)/config.json"))
            let shimBinary = (try? String(contentsOfFile: "\(bundle)/shim-binary-path", encoding: .utf8)) ?? ""
            #expect(shimBinary.hasSuffix("/" + shim.rawValue), "\(shimBinary)")

            let ps = try daemon.ctrOK(["task", "ps", "t2"], namespace: namespace)
            #expect(ps.contains(pid), "\(ps)")

            let exec = try daemon.ctr(["task", "exec", "--exec-id", "e1", "t2", "echo", "x"], namespace: namespace, timeout: .seconds(60))
            #expect(exec.succeeded, "\(exec)")
            #expect(exec.stdout == "x\n", "\(exec)")
            let failingExec = try daemon.ctr(["task", "exec", "--exec-id", "e2", "t2", "sh", "-c", "exit 4"], namespace: namespace)
            #expect(failingExec.status == 4, "\(failingExec)")

            try daemon.ctrOK(["task", "pause", "t2"], namespace: namespace)
            #expect(try Self.tasks(daemon, namespace: namespace)["t2"]?.status == "PAUSED")
            try daemon.ctrOK(["task", "resume", "t2"], namespace: namespace)
            #expect(try Self.tasks(daemon, namespace: namespace)["t2"]?.status == "RUNNING")

            let metrics = try daemon.ctrOK(["task", "metrics", "t2"], namespace: namespace)
            #expect(metrics.contains("t2"), "\(metrics)")
            #expect(metrics.contains("memory"), "\(metrics)")

            try daemon.ctrOK(["task", "kill", "-s", "SIGKILL", "t2"], namespace: namespace)
            try Self.waitForStatus(daemon, namespace: namespace, id: "t2", "STOPPED")
            try daemon.ctrOK(["task", "rm", "t2"], namespace: namespace)
            #expect(try Self.tasks(daemon, namespace: namespace).isEmpty)
            #expect(Self.settledBundles(daemon, namespace: namespace).isEmpty)
            try daemon.ctrOK(["containers", "rm", "t2"], namespace: namespace)
        }
    }

    @Test("after kill -9 of berthd, the running task is found again and can be killed and deleted", arguments: Shim.allCases)
    func restartRecovery(shim: Shim) async throws {
        try await withTaskDaemon(shim) { daemon, namespace in
            try daemon.ctrOK(["run", "-d", Self.image, "t3", "sleep", "3600"], namespace: namespace, timeout: .seconds(60))
            let before = try #require(try Self.tasks(daemon, namespace: namespace)["t3"])
            let shims = Self.shimProcesses(daemon)
            #expect(shims.count == 1, "\(shims)")

            daemon.crash()
            try daemon.start()
            let after = try Self.tasks(daemon, namespace: namespace)
            #expect(after["t3"]?.status == "RUNNING", "\(after)\n\(daemon.log(tail: 30))")
            #expect(after["t3"]?.pid == before.pid)
            #expect(daemon.fullLog.contains("shim recovered"))
            #expect(Self.shimProcesses(daemon).map(\.pid) == shims.map(\.pid), "the same shim serves the task")

            try daemon.ctrOK(["task", "kill", "-s", "9", "t3"], namespace: namespace)
            try Self.waitForStatus(daemon, namespace: namespace, id: "t3", "STOPPED")
            try daemon.ctrOK(["task", "delete", "t3"], namespace: namespace)
            #expect(try Self.tasks(daemon, namespace: namespace).isEmpty)
            #expect(Self.settledBundles(daemon, namespace: namespace).isEmpty)
            try daemon.ctrOK(["containers", "rm", "t3"], namespace: namespace)
        }
    }

    @Test("a task that exits while berthd is down shows STOPPED after the restart", arguments: Shim.allCases)
    func exitWhileDown(shim: Shim) async throws {
        try await withTaskDaemon(shim) { daemon, namespace in
            try daemon.ctrOK(["run", "-d", Self.image, "t5", "sh", "-c", "sleep 1; exit 7"], namespace: namespace, timeout: .seconds(60))
            daemon.crash()
            sleep(2)
            try daemon.start()
            try Self.waitForStatus(daemon, namespace: namespace, id: "t5", "STOPPED")
            let deleted = try daemon.ctrOK(["task", "delete", "t5"], namespace: namespace)
            _ = deleted
            #expect(try Self.tasks(daemon, namespace: namespace).isEmpty)
            try daemon.ctrOK(["containers", "rm", "t5"], namespace: namespace)
        }
    }

    @Test("a shim that dies is cleaned up: its task goes, /tasks/exit is published", arguments: Shim.allCases)
    func deadShim(shim: Shim) async throws {
        try await withTaskDaemon(shim) { daemon, namespace in
            try daemon.ctrOK(["run", "-d", Self.image, "t6", "sleep", "3600"], namespace: namespace, timeout: .seconds(60))
            let shims = Self.shimProcesses(daemon)
            try #require(shims.count == 1, "\(shims)")
            let events = try Command.start(["ctr", "--address", daemon.socket, "events"])
            defer { events.stop(signal: SIGKILL) }
            usleep(300_000)
            let address = try String(contentsOfFile: "\(shims[0].bundle)/address", encoding: .utf8)
            let socket = String(address.dropFirst("unix://".count))
            #expect(FileManager.default.fileExists(atPath: socket))
            kill(shims[0].pid, SIGKILL)
            for _ in 0..<100 where !Self.bundles(daemon, namespace: namespace).isEmpty { usleep(100_000) }
            #expect(Self.bundles(daemon, namespace: namespace).isEmpty)
            #expect(try Self.tasks(daemon, namespace: namespace)["t6"] == nil)
            for _ in 0..<50 where !events.stdoutSoFar.contains("/tasks/delete") { usleep(100_000) }
            #expect(events.stdoutSoFar.contains("\(namespace) /tasks/exit"), "\(events.stdoutSoFar)")
            #expect(events.stdoutSoFar.contains("\(namespace) /tasks/delete"), "\(events.stdoutSoFar)")
            #expect(!FileManager.default.fileExists(atPath: socket), "the dead shim's socket \(socket) is left")
            try daemon.ctrOK(["containers", "rm", "t6"], namespace: namespace)
        }
    }

    @Test("bad input: unknown runtime binary, deleting a running task, tasks that do not exist", arguments: Shim.allCases)
    func badInput(shim: Shim) async throws {
        try await withTaskDaemon(shim) { daemon, namespace in
            let unknown = try daemon.ctr(["run", "--rm", "--runtime", "io.containerd.nope.v1", Self.image, "t4", "true"],
                                         namespace: namespace, timeout: .seconds(60))
            #expect(!unknown.succeeded)
            #expect(unknown.stderr.contains("binary not installed"), "\(unknown)")
            #expect(unknown.stderr.contains("containerd-shim-nope-v1"), "\(unknown)")
            #expect(Self.bundles(daemon, namespace: namespace).isEmpty)
            _ = try? daemon.ctr(["containers", "rm", "t4"], namespace: namespace)

            // ctr task kill on a container without a task: Tasks/Get says NOT_FOUND.
            try daemon.ctrOK(["containers", "create", Self.image, "c1"], namespace: namespace)
            let missing = try daemon.ctr(["task", "kill", "-s", "9", "c1"], namespace: namespace)
            #expect(!missing.succeeded)
            #expect(missing.stderr.contains("not found"), "\(missing)")

            try daemon.ctrOK(["run", "-d", Self.image, "t7", "sleep", "3600"], namespace: namespace, timeout: .seconds(60))
            try await withAPIClient(daemon.socket) { client in
                let tasks = Containerd_Services_Tasks_V1_Tasks.Client(wrapping: client)
                var delete = Containerd_Services_Tasks_V1_DeleteTaskRequest()
                delete.containerID = "t7"
                await expectRPCError(.failedPrecondition, "t7", "stopped") {
                    try await tasks.delete(delete, metadata: ns(namespace))
                }
                var kill = Containerd_Services_Tasks_V1_KillRequest()
                kill.containerID = "c1"
                kill.signal = 9
                await expectRPCError(.notFound, "c1") { try await tasks.kill(kill, metadata: ns(namespace)) }
                var get = Containerd_Services_Tasks_V1_GetRequest()
                get.containerID = "nope"
                await expectRPCError(.notFound, "nope") { try await tasks.get(get, metadata: ns(namespace)) }
                var create = Containerd_Services_Tasks_V1_CreateTaskRequest()
                create.containerID = "t7"
                await expectRPCError(.alreadyExists, "t7") { try await tasks.create(create, metadata: ns(namespace)) }
                create.containerID = "nope"
                await expectRPCError(.notFound, "nope") { try await tasks.create(create, metadata: ns(namespace)) }
                var checkpoint = Containerd_Services_Tasks_V1_CheckpointTaskRequest()
                checkpoint.containerID = "t7"
                await expectRPCError(.unimplemented) { try await tasks.checkpoint(checkpoint, metadata: ns(namespace)) }
            }
            #expect(try Self.tasks(daemon, namespace: namespace)["t7"]?.status == "RUNNING")
            try daemon.ctrOK(["task", "kill", "-s", "SIGKILL", "t7"], namespace: namespace)
            try Self.waitForStatus(daemon, namespace: namespace, id: "t7", "STOPPED")
            try daemon.ctrOK(["task", "rm", "t7"], namespace: namespace)
            try daemon.ctrOK(["containers", "rm", "t7", "c1"], namespace: namespace)
        }
    }
}
