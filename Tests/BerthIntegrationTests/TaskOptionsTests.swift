import BerthAPI
import BerthTestSupport
import Foundation
import GRPCCore
import SwiftProtobuf
import Testing

/// `ctr run` options, terminals, attach, `task start/delete`, crun, OOM events and bad input,
/// driven by Debian's ctr against berthd with berth-shim (its default), each checked from inside
/// the container (or from the host for cgroups). What containerd 1.6.20 does was checked by hand
/// against the same ctr and image; where Berth differs on purpose, the test says so.
///
/// Uses ``TaskTests``' fixture: a berthd per test, the busybox image in a fresh namespace, and
/// everything (tasks, containers, shims, runc state) removed afterwards, also on failure.
@Suite("task options, terminals and OOM through ctr", .serialized)
struct TaskOptionsTests {
    typealias Shim = TaskTests.Shim
    static let image = TaskTests.image

    func withTaskDaemon<T>(_ shim: Shim = .berth, _ body: (DaemonProcess, String) async throws -> T) async throws -> T {
        try await TaskTests().withTaskDaemon(shim, body)
    }

    /// Nothing of the namespace's tasks is left: no task, container, bundle, shim, mount under
    /// the daemon's directory, or runc state.
    static func expectNothingLeft(_ daemon: DaemonProcess, namespace: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(try daemon.ctrOK(["containers", "ls", "-q"], namespace: namespace).isEmpty, sourceLocation: sourceLocation)
        #expect(try TaskTests.tasks(daemon, namespace: namespace).isEmpty, sourceLocation: sourceLocation)
        #expect(TaskTests.settledBundles(daemon, namespace: namespace).isEmpty, sourceLocation: sourceLocation)
        // A shim exits after Shutdown; give the last one a moment.
        for _ in 0..<50 where !TaskTests.shimProcesses(daemon).isEmpty { usleep(100_000) }
        #expect(TaskTests.shimProcesses(daemon).isEmpty, "shims left: \(TaskTests.shimProcesses(daemon))\n\(daemon.log(tail: 60))",
                sourceLocation: sourceLocation)
        #expect(mountPoints(under: daemon.state).isEmpty, "mounts left: \(mountPoints(under: daemon.state))", sourceLocation: sourceLocation)
        let runc = (try? FileManager.default.contentsOfDirectory(atPath: "/run/containerd/runc/\(namespace)")) ?? []
        #expect(runc.isEmpty, "runc state left: \(runc)", sourceLocation: sourceLocation)
    }

    /// A field of this process's `/proc/self/status` (the host's view).
    static func hostStatus(_ field: String) throws -> String {
        try statusField(field, in: String(contentsOfFile: "/proc/self/status", encoding: .utf8))
    }

    static func statusField(_ field: String, in text: String) throws -> String {
        for line in text.split(separator: "\n") where line.hasPrefix(field + ":") {
            return line.dropFirst(field.count + 1).trimmingCharacters(in: .whitespaces)
        }
        throw TestSupportError.failed("no \(field) in:\n\(text)")
    }

    /// Runs `ctr ARGS` under `script`, so that ctr has a real terminal (`-t` needs one).
    static func ctrInPTY(_ daemon: DaemonProcess, _ arguments: [String], namespace: String,
                         timeout: Duration = .seconds(60)) throws -> CommandResult {
        try Command.run(["script", "-qec", ptyCommand(daemon, arguments, namespace: namespace), "/dev/null"], timeout: timeout)
    }

    static func ptyCommand(_ daemon: DaemonProcess, _ arguments: [String], namespace: String) -> String {
        let quoted = (["ctr", "--address", daemon.socket, "--namespace", namespace] + arguments).map { argument in
            "'" + argument.replacingOccurrences(of: "'", with: "'\\''") + "'"
        }
        return quoted.joined(separator: " ")
    }

    /// The directory of `pid`'s cgroup for `controller` (cgroup v1), or its unified cgroup (v2).
    static func cgroupDirectory(pid: String, controller: String) throws -> String {
        let text = try String(contentsOfFile: "/proc/\(pid)/cgroup", encoding: .utf8)
        let unified = FileManager.default.fileExists(atPath: "/sys/fs/cgroup/cgroup.controllers")
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3 else { continue }
            if unified, fields[0] == "0" { return "/sys/fs/cgroup" + fields[2] }
            if !unified, fields[1].split(separator: ",").contains(Substring(controller)) {
                return "/sys/fs/cgroup/\(controller)" + fields[2]
            }
        }
        throw TestSupportError.failed("no \(controller) cgroup for pid \(pid):\n\(text)")
    }

    static func read(_ path: String) throws -> String {
        try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Polls until `condition` holds (10 s at most).
    static func eventually(_ condition: () -> Bool) -> Bool {
        for _ in 0..<100 {
            if condition() { return true }
            usleep(100_000)
        }
        return condition()
    }

    // MARK: - Options

    @Test("--env, --cwd, --mount (read-only bind), --net-host and --read-only reach the container")
    func processAndMountOptions() async throws {
        try await withTaskDaemon { daemon, namespace in
            let env = try daemon.ctr(["run", "--rm", "--env", "A=b", Self.image, "o1", "env"], namespace: namespace, timeout: .seconds(60))
            #expect(env.succeeded, "\(env)")
            #expect(env.stdout.split(separator: "\n").contains("A=b"), "\(env)")

            let cwd = try daemon.ctr(["run", "--rm", "--cwd", "/tmp", Self.image, "o2", "pwd"], namespace: namespace, timeout: .seconds(60))
            #expect(cwd.stdout == "/tmp\n", "\(cwd)")

            let host = try TestEnvironment.makeTemporaryDirectory("berth-bind")
            defer { try? FileManager.default.removeItem(atPath: host) }
            try "from the host\n".write(toFile: "\(host)/f", atomically: true, encoding: .utf8)
            let mount = try daemon.ctr(["run", "--rm", "--mount", "type=bind,src=\(host),dst=/m,options=rbind:ro", Self.image, "o3",
                                        "sh", "-c", "cat /m/f; touch /m/g && echo writable || echo read-only"],
                                       namespace: namespace, timeout: .seconds(60))
            #expect(mount.stdout == "from the host\nread-only\n", "\(mount)")
            #expect(mount.stderr.contains("Read-only file system"), "\(mount)")
            #expect(!FileManager.default.fileExists(atPath: "\(host)/g"))

            let hostNet = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/net")
            let netHost = try daemon.ctr(["run", "--rm", "--net-host", Self.image, "o4", "readlink", "/proc/self/ns/net"],
                                         namespace: namespace, timeout: .seconds(60))
            #expect(netHost.stdout == hostNet + "\n", "\(netHost) vs host \(hostNet)")
            let ownNet = try daemon.ctr(["run", "--rm", Self.image, "o5", "readlink", "/proc/self/ns/net"],
                                        namespace: namespace, timeout: .seconds(60))
            #expect(ownNet.succeeded && ownNet.stdout.hasPrefix("net:[") && ownNet.stdout != hostNet + "\n", "\(ownNet)")

            let readOnly = try daemon.ctr(["run", "--rm", "--read-only", Self.image, "o6",
                                           "sh", "-c", "touch /x && echo writable || echo read-only; touch /tmp/y && echo tmp-writable"],
                                          namespace: namespace, timeout: .seconds(60))
            // ctr's --read-only makes the whole rootfs read-only, /tmp included (no tmpfs there).
            #expect(readOnly.stdout.hasPrefix("read-only\n"), "\(readOnly)")
            #expect(readOnly.stderr.contains("Read-only file system"), "\(readOnly)")
            let writable = try daemon.ctr(["run", "--rm", Self.image, "o7", "sh", "-c", "touch /x && echo writable"],
                                          namespace: namespace, timeout: .seconds(60))
            #expect(writable.stdout == "writable\n", "\(writable)")
            try Self.expectNothingLeft(daemon, namespace: namespace)
        }
    }

    @Test("--log-uri: file:// appends stdout and stderr to the file; binary:// runs a logging program on them")
    func logURI() async throws {
        try await withTaskDaemon { daemon, namespace in
            let directory = try TestEnvironment.makeTemporaryDirectory("berth-loguri")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let log = "\(directory)/new/dir/task.log"
            for (id, word) in [("l1", "first"), ("l2", "second")] {
                let run = try daemon.ctr(["run", "--rm", "--log-uri", "file://\(log)", Self.image, id,
                                          "sh", "-c", "echo \(word) out; echo \(word) err >&2"],
                                         namespace: namespace, timeout: .seconds(60))
                #expect(run.succeeded && run.stdout.isEmpty, "\(run)")
            }
            let written = try String(contentsOfFile: log, encoding: .utf8)
            #expect(written.split(separator: "\n").sorted() == ["first err", "first out", "second err", "second out"], "\(written)")

            // containerd's binary log driver: stdout on fd 3, stderr on fd 4, ready when fd 5 closes.
            let logger = "\(directory)/logger.sh"
            let binaryLog = "\(directory)/binary.log"
            try """
            #!/bin/sh
            exec 5>&-
            echo "args=$* id=$CONTAINER_ID ns=$CONTAINER_NAMESPACE" >> \(binaryLog)
            sed 's/^/out: /' <&3 >> \(binaryLog).out &
            sed 's/^/err: /' <&4 >> \(binaryLog).err
            wait

            """.write(toFile: logger, atomically: true, encoding: .utf8)
            chmod(logger, 0o755)
            let binary = try daemon.ctr(["run", "--rm", "--log-uri", "binary://\(logger)?tag=t%201", Self.image, "l3",
                                         "sh", "-c", "echo to out; echo to err >&2"],
                                        namespace: namespace, timeout: .seconds(60))
            #expect(binary.succeeded && binary.stdout.isEmpty, "\(binary)")
            #expect(Self.eventually { (try? String(contentsOfFile: binaryLog + ".err", encoding: .utf8)) == "err: to err\n" })
            #expect(Self.eventually { (try? String(contentsOfFile: binaryLog + ".out", encoding: .utf8)) == "out: to out\n" })
            #expect((try? String(contentsOfFile: binaryLog, encoding: .utf8)) == "args=tag t 1 id=l3 ns=\(namespace)\n")

            let missing = try daemon.ctr(["run", "--rm", "--log-uri", "binary://\(directory)/no-such-logger", Self.image, "l4", "true"],
                                         namespace: namespace, timeout: .seconds(60))
            #expect(!missing.succeeded && missing.stderr.contains("no-such-logger"), "\(missing)")
            _ = try? daemon.ctr(["containers", "rm", "l4"], namespace: namespace)
            try Self.expectNothingLeft(daemon, namespace: namespace)
        }
    }

    @Test("--memory-limit and --cpus set the container's cgroup; task metrics shows the limit")
    func resourceLimits() async throws {
        try await withTaskDaemon { daemon, namespace in
            try daemon.ctrOK(["run", "-d", "--memory-limit", "33554432", "--cpus", "0.5", Self.image, "r1", "sleep", "3600"],
                             namespace: namespace, timeout: .seconds(60))
            let pid = try #require(try TaskTests.tasks(daemon, namespace: namespace)["r1"]?.pid)
            if FileManager.default.fileExists(atPath: "/sys/fs/cgroup/cgroup.controllers") {
                let cgroup = try Self.cgroupDirectory(pid: pid, controller: "")
                #expect(try Self.read("\(cgroup)/memory.max") == "33554432")
                #expect(try Self.read("\(cgroup)/cpu.max") == "50000 100000")
            } else {
                let memory = try Self.cgroupDirectory(pid: pid, controller: "memory")
                #expect(try Self.read("\(memory)/memory.limit_in_bytes") == "33554432")
                let cpu = try Self.cgroupDirectory(pid: pid, controller: "cpu")
                #expect(try Self.read("\(cpu)/cpu.cfs_quota_us") == "50000")
                #expect(try Self.read("\(cpu)/cpu.cfs_period_us") == "100000")
            }
            let metrics = try daemon.ctrOK(["task", "metrics", "r1"], namespace: namespace)
            #expect(metrics.contains("33554432"), "\(metrics)")

            try daemon.ctrOK(["task", "kill", "-s", "SIGKILL", "r1"], namespace: namespace)
            try TaskTests.waitForStatus(daemon, namespace: namespace, id: "r1", "STOPPED")
            try daemon.ctrOK(["task", "rm", "r1"], namespace: namespace)
            try daemon.ctrOK(["containers", "rm", "r1"], namespace: namespace)
            try Self.expectNothingLeft(daemon, namespace: namespace)
        }
    }

    @Test("--privileged, --cap-add CAP_SYS_ADMIN and --seccomp show in /proc/self/status")
    func securityOptions() async throws {
        try await withTaskDaemon { daemon, namespace in
            let script = "grep -E '^(CapEff|Seccomp):' /proc/self/status; ls /dev | wc -l"
            func status(_ id: String, _ options: [String]) throws -> (capEff: UInt64, seccomp: String, devices: Int) {
                let result = try daemon.ctr(["run", "--rm"] + options + [Self.image, id, "sh", "-c", script],
                                            namespace: namespace, timeout: .seconds(60))
                guard result.succeeded else { throw TestSupportError.failed("\(result)") }
                let lines = result.stdout.split(separator: "\n")
                let capEff = try #require(UInt64(try Self.statusField("CapEff", in: result.stdout), radix: 16), "\(result)")
                return (capEff, try Self.statusField("Seccomp", in: result.stdout), Int(lines.last ?? "") ?? 0)
            }
            let sysAdmin: UInt64 = 1 << 21
            let plain = try status("s0", [])
            #expect(plain.capEff & sysAdmin == 0)
            #expect(plain.seccomp == "0")

            let privileged = try status("s1", ["--privileged"])
            let hostCaps = try #require(UInt64(try Self.hostStatus("CapEff"), radix: 16))
            #expect(privileged.capEff == hostCaps, "privileged: every capability the host has")
            #expect(privileged.devices > plain.devices, "privileged sees the host's devices: \(privileged.devices) vs \(plain.devices)")

            let capAdd = try status("s2", ["--cap-add", "CAP_SYS_ADMIN"])
            #expect(capAdd.capEff == plain.capEff | sysAdmin)

            let seccomp = try status("s3", ["--seccomp"])
            #expect(seccomp.seccomp == "2", "filter mode")
            try Self.expectNothingLeft(daemon, namespace: namespace)
        }
    }

    // MARK: - Terminals and attach

    @Test("run -t and task exec -t through a real PTY; exec without -t has no terminal")
    func terminals() async throws {
        try await withTaskDaemon { daemon, namespace in
            let run = try Self.ctrInPTY(daemon, ["run", "--rm", "-t", Self.image, "p1", "sh", "-c", "tty; exit 3"], namespace: namespace)
            #expect(run.status == 3, "\(run)")
            #expect(run.stdout.contains("/dev/pts/"), "\(run)")

            try daemon.ctrOK(["run", "-d", Self.image, "p2", "sleep", "3600"], namespace: namespace, timeout: .seconds(60))
            let exec = try Self.ctrInPTY(daemon, ["task", "exec", "-t", "--exec-id", "e1", "p2", "sh", "-c", "tty; exit 4"],
                                         namespace: namespace)
            #expect(exec.status == 4, "\(exec)")
            #expect(exec.stdout.contains("/dev/pts/"), "\(exec)")
            let plain = try daemon.ctr(["task", "exec", "--exec-id", "e2", "p2", "sh", "-c", "tty; exit 5"], namespace: namespace)
            #expect(plain.status == 5, "\(plain)")
            #expect(plain.stdout == "not a tty\n", "\(plain)")

            try daemon.ctrOK(["task", "kill", "-s", "SIGKILL", "p2"], namespace: namespace)
            try TaskTests.waitForStatus(daemon, namespace: namespace, id: "p2", "STOPPED")
            try daemon.ctrOK(["task", "rm", "p2"], namespace: namespace)
            try daemon.ctrOK(["containers", "rm", "p2"], namespace: namespace)
            try Self.expectNothingLeft(daemon, namespace: namespace)
        }
    }

    /// `ctr task attach` forwards the signals it gets to the task (busybox sh as PID 1 ignores
    /// SIGTERM), so it is ended by killing the task: it then exits with the task's status and,
    /// as with containerd, deletes the task.
    @Test("task attach to a detached task, with and without a terminal", arguments: [false, true])
    func attach(tty: Bool) async throws {
        try await withTaskDaemon { daemon, namespace in
            let id = tty ? "a-tty" : "a-plain"
            let loop = "i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done"
            if tty {
                // `run -d -t` also wants a terminal of its own.
                let started = try Self.ctrInPTY(daemon, ["run", "-d", "-t", Self.image, id, "sh", "-c", loop], namespace: namespace)
                #expect(started.succeeded, "\(started)")
            } else {
                try daemon.ctrOK(["run", "-d", Self.image, id, "sh", "-c", loop], namespace: namespace, timeout: .seconds(60))
            }
            #expect(try TaskTests.tasks(daemon, namespace: namespace)[id]?.status == "RUNNING")

            let attach = tty
                ? try Command.start(["script", "-qec", Self.ptyCommand(daemon, ["task", "attach", id], namespace: namespace), "/dev/null"])
                : try Command.start(["ctr", "--address", daemon.socket, "--namespace", namespace, "task", "attach", id])
            defer { attach.stop(signal: SIGKILL) }
            #expect(Self.eventually { attach.stdoutSoFar.contains("tick") }, "attach shows the output: \(attach.stdoutSoFar) \(attach.stderrSoFar)")

            try daemon.ctrOK(["task", "kill", "-s", "SIGKILL", id], namespace: namespace)
            let ended = try attach.wait(timeout: .seconds(30))
            #expect(ended.status == 137, "\(ended)")
            #expect(Self.eventually { (try? TaskTests.tasks(daemon, namespace: namespace)[id]) == nil }, "attach deleted the task")
            try daemon.ctrOK(["containers", "rm", id], namespace: namespace)
            try Self.expectNothingLeft(daemon, namespace: namespace)
        }
    }

    // MARK: - task start / delete

    @Test("containers create then task start; start again; task delete")
    func startAndDelete() async throws {
        try await withTaskDaemon { daemon, namespace in
            // Attached `task start` waits, exits with the task's status and deletes the task.
            try daemon.ctrOK(["containers", "create", Self.image, "c1", "--", "sh", "-c", "echo started; exit 6"], namespace: namespace)
            let first = try daemon.ctr(["task", "start", "c1"], namespace: namespace, timeout: .seconds(60))
            #expect(first.status == 6, "\(first)")
            #expect(first.stdout == "started\n", "\(first)")
            #expect(try TaskTests.tasks(daemon, namespace: namespace)["c1"] == nil)
            let again = try daemon.ctr(["task", "start", "c1"], namespace: namespace, timeout: .seconds(60))
            #expect(again.status == 6 && again.stdout == "started\n", "a container can run again: \(again)")

            // Detached: the task stays; a second start finds it (Tasks/Create: ALREADY_EXISTS).
            try daemon.ctrOK(["containers", "create", Self.image, "c2", "sleep", "3600"], namespace: namespace)
            try daemon.ctrOK(["task", "start", "-d", "c2"], namespace: namespace, timeout: .seconds(60))
            #expect(try TaskTests.tasks(daemon, namespace: namespace)["c2"]?.status == "RUNNING")
            let twice = try daemon.ctr(["task", "start", "-d", "c2"], namespace: namespace, timeout: .seconds(60))
            #expect(!twice.succeeded)
            #expect(twice.stderr.contains("already exists"), "\(twice)")
            #expect(try TaskTests.tasks(daemon, namespace: namespace)["c2"]?.status == "RUNNING", "the first task is untouched")

            try daemon.ctrOK(["task", "kill", "-s", "SIGKILL", "c2"], namespace: namespace)
            try TaskTests.waitForStatus(daemon, namespace: namespace, id: "c2", "STOPPED")
            try daemon.ctrOK(["task", "delete", "c2"], namespace: namespace)
            #expect(try TaskTests.tasks(daemon, namespace: namespace)["c2"] == nil)
            let deletedTwice = try daemon.ctr(["task", "delete", "c2"], namespace: namespace)
            #expect(!deletedTwice.succeeded)
            #expect(deletedTwice.stderr.contains("not found"), "\(deletedTwice)")
            try daemon.ctrOK(["containers", "rm", "c1", "c2"], namespace: namespace)
            try Self.expectNothingLeft(daemon, namespace: namespace)
        }
    }

    // MARK: - crun

    @Test("--runc-binary crun: options, exit status and OOM events")
    func crun() async throws {
        try await withTaskDaemon { daemon, namespace in
            let events = try Command.start(["ctr", "--address", daemon.socket, "events"])
            defer { events.stop(signal: SIGKILL) }
            usleep(300_000)
            let run = try daemon.ctr(["run", "--rm", "--runc-binary", "crun", "--env", "A=b", "--cwd", "/tmp", "--read-only",
                                      Self.image, "k1", "sh", "-c", "echo $A; pwd; touch /x || echo read-only; exit 9"],
                                     namespace: namespace, timeout: .seconds(60))
            #expect(run.status == 9, "\(run)")
            #expect(run.stdout == "b\n/tmp\nread-only\n", "\(run)")

            let oom = try daemon.ctr(["run", "--rm", "--runc-binary", "crun", "--memory-limit", "8388608", Self.image, "k2",
                                      "sh", "-c", "x=a; while true; do x=$x$x; done"], namespace: namespace, timeout: .seconds(60))
            #expect(oom.status == 137, "\(oom)")
            #expect(Self.eventually { events.stdoutSoFar.contains("\(namespace) /tasks/oom {\"container_id\":\"k2\"}") },
                    "\(events.stdoutSoFar)")

            let missing = try daemon.ctr(["run", "--rm", "--runc-binary", "crun", Self.image, "k3", "/nonexistent"],
                                         namespace: namespace, timeout: .seconds(60))
            #expect(missing.status == 1, "\(missing)")
            // crun's own words, relayed as containerd's shim relays them.
            #expect(missing.stderr.contains("OCI runtime create failed: executable file `/nonexistent` not found"), "\(missing)")
            try Self.expectNothingLeft(daemon, namespace: namespace)
        }
    }

    // MARK: - OOM

    @Test("a container that exceeds its memory limit produces /tasks/oom; one within it does not", arguments: Shim.allCases)
    func oomEvent(shim: Shim) async throws {
        try await withTaskDaemon(shim) { daemon, namespace in
            let events = try Command.start(["ctr", "--address", daemon.socket, "events"])
            defer { events.stop(signal: SIGKILL) }
            usleep(300_000)
            let calm = try daemon.ctr(["run", "--rm", "--memory-limit", "33554432", Self.image, "m0", "true"],
                                      namespace: namespace, timeout: .seconds(60))
            #expect(calm.succeeded, "\(calm)")

            // The shell doubles a string until the 8 MiB limit is hit and the kernel kills it.
            let hog = try daemon.ctr(["run", "--rm", "--memory-limit", "8388608", Self.image, "m1",
                                      "sh", "-c", "x=a; while true; do x=$x$x; done"], namespace: namespace, timeout: .seconds(60))
            #expect(hog.status == 137, "SIGKILLed by the OOM killer: \(hog)")
            let oomLine = "\(namespace) /tasks/oom {\"container_id\":\"m1\"}"
            #expect(Self.eventually { events.stdoutSoFar.contains(oomLine) }, "\(events.stdoutSoFar)")
            #expect(Self.eventually { events.stdoutSoFar.contains("\(namespace) /containers/delete {\"id\":\"m1\"}") })
            #expect(!events.stdoutSoFar.contains("/tasks/oom {\"container_id\":\"m0\"}"), "no OOM for m0: \(events.stdoutSoFar)")
            let lines = events.stdoutSoFar.split(separator: "\n")
            #expect(lines.filter { $0.contains("/tasks/oom") }.count == 1, "one OOM event: \(events.stdoutSoFar)")
            try Self.expectNothingLeft(daemon, namespace: namespace)
        }
    }

    // MARK: - Bad input

    /// containerd 1.6.20 answers a failing `runc create` with UNKNOWN and
    /// `failed to create shim task: OCI runtime create failed: <runc's message>: unknown`;
    /// berthd sends the same code and words.
    @Test("an entrypoint missing in the image, or a runc binary that does not exist: runc's error, nothing left")
    func badEntrypointAndRuntimeBinary() async throws {
        try await withTaskDaemon { daemon, namespace in
            let missing = try daemon.ctr(["run", "--rm", Self.image, "b1", "/nonexistent"], namespace: namespace, timeout: .seconds(60))
            #expect(missing.status == 1, "\(missing)")
            #expect(missing.stderr.contains("""
                failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: \
                exec: "/nonexistent": stat /nonexistent: no such file or directory: unknown
                """), "\(missing)")
            try Self.expectNothingLeft(daemon, namespace: namespace)

            let absolute = try daemon.ctr(["run", "--rm", "--runc-binary", "/nonexistent/runc", Self.image, "b2", "true"],
                                          namespace: namespace, timeout: .seconds(60))
            #expect(absolute.status == 1, "\(absolute)")
            #expect(absolute.stderr.contains("OCI runtime create failed"), "\(absolute)")
            #expect(absolute.stderr.contains("/nonexistent/runc: no such file or directory"), "\(absolute)")
            let unknown = try daemon.ctr(["run", "--rm", "--runc-binary", "nosuchrunc", Self.image, "b3", "true"],
                                         namespace: namespace, timeout: .seconds(60))
            #expect(unknown.status == 1, "\(unknown)")
            #expect(unknown.stderr.contains("exec: \"nosuchrunc\": executable file not found in $PATH"), "\(unknown)")
            try Self.expectNothingLeft(daemon, namespace: namespace)

            // The codes, through the API.
            try daemon.ctrOK(["containers", "create", Self.image, "b4", "/nonexistent"], namespace: namespace)
            try daemon.ctrOK(["run", "-d", Self.image, "b5", "sleep", "3600"], namespace: namespace, timeout: .seconds(60))
            // An exec of a missing binary: runc exec's message, word for word as with containerd.
            let exec = try daemon.ctr(["task", "exec", "--exec-id", "x1", "b5", "/nonexistent"], namespace: namespace)
            #expect(exec.status == 1, "\(exec)")
            #expect(exec.stderr.contains("""
                OCI runtime exec failed: exec failed: unable to start container process: \
                exec: "/nonexistent": stat /nonexistent: no such file or directory: unknown
                """), "\(exec)")
            try await withAPIClient(daemon.socket) { client in
                let tasks = Containerd_Services_Tasks_V1_Tasks.Client(wrapping: client)
                var create = Containerd_Services_Tasks_V1_CreateTaskRequest()
                create.containerID = "b4"
                await expectRPCError(.unknown, "failed to create shim task", "stat /nonexistent: no such file or directory") {
                    try await tasks.create(create, metadata: ns(namespace))
                }
                // Starting a running task again: berth-shim says FAILED_PRECONDITION (containerd's
                // runc shim says UNKNOWN "cannot start a running process").
                var start = Containerd_Services_Tasks_V1_StartRequest()
                start.containerID = "b5"
                await expectRPCError(.failedPrecondition, "cannot start a running process") {
                    try await tasks.start(start, metadata: ns(namespace))
                }
                start.execID = "nope"
                await expectRPCError(.notFound, "nope") { try await tasks.start(start, metadata: ns(namespace)) }
                // Resizing a process without a terminal does nothing, as in containerd.
                var resize = Containerd_Services_Tasks_V1_ResizePtyRequest()
                resize.containerID = "b5"
                resize.width = 80
                resize.height = 24
                _ = try await tasks.resizePty(resize, metadata: ns(namespace))
            }
            #expect(try TaskTests.tasks(daemon, namespace: namespace)["b5"]?.status == "RUNNING")
            #expect(TaskTests.bundles(daemon, namespace: namespace) == ["b5"], "the failed create left no bundle")
            try daemon.ctrOK(["task", "kill", "-s", "SIGKILL", "b5"], namespace: namespace)
            try TaskTests.waitForStatus(daemon, namespace: namespace, id: "b5", "STOPPED")
            try daemon.ctrOK(["task", "rm", "b5"], namespace: namespace)
            try daemon.ctrOK(["containers", "rm", "b4", "b5"], namespace: namespace)
            try Self.expectNothingLeft(daemon, namespace: namespace)
        }
    }
}
