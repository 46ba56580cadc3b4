import BerthCore
import BerthShim
import Testing

@Suite struct TaskLifecycleTests {
    let exit = ExitStatus(code: 3, exitedAt: ProtoTimestamp(seconds: 1, nanos: 0))

    @Test func happyPath() throws {
        var lifecycle = TaskLifecycle.created
        #expect(try lifecycle.start() == [.invokeRuntimeStart, .publishStart])
        #expect(lifecycle == .running && lifecycle.status == .running)
        #expect(try lifecycle.pause() == [.invokeRuntimePause, .publishPaused])
        #expect(lifecycle.status == .paused)
        #expect(try lifecycle.resume() == [.invokeRuntimeResume, .publishResumed])
        #expect(lifecycle.exited(exit) == [.publishExit(exit), .wakeWaiters])
        #expect(lifecycle.exit == exit && lifecycle.status == .stopped)
        #expect(lifecycle.exited(exit).isEmpty)
        #expect(try lifecycle.delete() == [.invokeRuntimeDelete, .publishDelete])
        #expect(lifecycle == .deleted)
    }

    @Test func wrongStatesThrowFailedPrecondition() throws {
        var running = TaskLifecycle.running
        #expect(failsWith(.failedPrecondition) { _ = try running.start() })
        #expect(failsWith(.failedPrecondition) { _ = try running.resume() })
        #expect(failsWith(.failedPrecondition) { _ = try running.delete() })
        #expect(running == .running)
        var created = TaskLifecycle.created
        #expect(failsWith(.failedPrecondition) { _ = try created.pause() })
        var stopped = TaskLifecycle.stopped(exit)
        #expect(failsWith(.failedPrecondition) { _ = try stopped.start() })
        #expect(failsWith(.notFound) { try stopped.kill() })
        #expect(throws: Never.self) { try TaskLifecycle.created.kill() }
        var deleted = TaskLifecycle.deleted
        #expect(failsWith(.notFound) { _ = try deleted.delete() })
    }

    @Test func createdProcessCanBeDeleted() throws {
        var lifecycle = TaskLifecycle.created
        #expect(try lifecycle.delete() == [.invokeRuntimeDelete, .publishDelete])
    }

    func failsWith(_ code: BerthError.Code, _ body: () throws -> Void) -> Bool {
        do {
            try body()
            return false
        } catch {
            return (error as? BerthError)?.code == code
        }
    }
}

@Suite struct ShimHelperTests {
    @Test func sha256KnownAnswers() {
        #expect(SHA256.hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256.hex(String(repeating: "a", count: 1000)) == "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3")
    }

    @Test func socketAddressMatchesContainerd() {
        // Reference sheet §2.3: sha256("/tmp/shimtest/c.sock/test/t1") names the socket.
        let address = ShimCommand.socketAddress(daemonAddress: "/tmp/shimtest/c.sock", namespace: "test", group: "t1")
        #expect(address == "unix:///run/containerd/s/" + SHA256.hex("/tmp/shimtest/c.sock/test/t1"))
        #expect(address.hasPrefix("unix:///run/containerd/s/249f3b7b"))
    }

    @Test func goFlagParsing() throws {
        let parsed = try ShimArguments(parsing: ["-namespace", "ns", "-address", "/run/c.sock", "-publish-binary", "/usr/bin/containerd",
                                                 "-id", "c1", "-debug", "--bundle=/b", "start"])
        #expect(parsed.namespace == "ns" && parsed.address == "/run/c.sock" && parsed.id == "c1")
        #expect(parsed.debug && parsed.bundle == "/b" && parsed.action == "start" && parsed.publishBinary == "/usr/bin/containerd")
        let served = try ShimArguments(parsing: ["-namespace", "ns", "-id", "c1", "-address", "/a"])
        #expect(served.action.isEmpty)
        #expect(throws: BerthError.self) { try ShimArguments(parsing: ["-bogus", "x"]) }
        #expect(throws: BerthError.self) { try ShimArguments(parsing: ["-id"]) }
    }

    @Test func bundleSpecFacts() throws {
        let json = """
        {"ociVersion":"1.0.2","linux":{"cgroupsPath":"/default/c1","namespaces":[{"type":"mount"},{"type":"pid"}]},
         "annotations":{"io.containerd.runc.v2.group":"g1","x":"\\u00e9"}}
        """
        let spec = try BundleSpec(json: Array(json.utf8))
        #expect(spec.cgroupsPath == "/default/c1" && !spec.killAllOnExit)
        #expect(spec.groupID(default: "c1") == "g1" && spec.annotations["x"] == "é")
        let hostPID = try BundleSpec(json: Array(#"{"linux":{"namespaces":[{"type":"pid","path":"/proc/1/ns/pid"}]}}"#.utf8))
        #expect(hostPID.killAllOnExit && hostPID.groupID(default: "c2") == "c2")
    }

    @Test func jsonParsesRuncOutput() throws {
        let ps = try JSONValue(parsing: "[1234, 5678]")
        #expect(ps.arrayValue?.compactMap(\.intValue) == [1234, 5678])
        let log = try JSONValue(parsing: #"{"level":"error","msg":"runc create failed: exec: \"nope\": executable file not found in $PATH","time":"t"}"#)
        #expect(log["msg"]?.stringValue == #"runc create failed: exec: "nope": executable file not found in $PATH"#)
        #expect(throws: BerthError.self) { try JSONValue(parsing: "{") }
    }

    @Test func exitStatusFromWaitStatus() {
        #expect(ExitStatus(waitStatus: 3 << 8, at: ProtoTimestamp()).code == 3)
        #expect(ExitStatus(waitStatus: 9, at: ProtoTimestamp()).code == 137)
    }
}
