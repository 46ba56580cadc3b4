@testable import BerthShim
import BerthCore
import Glibc
import Testing

/// Spawning into a private mount namespace without one mount, as crun calls on hybrid cgroup hosts
/// are run: the child does not see the mount, the shim still does.
@Suite(.serialized) struct PrivateMountSpawnTests {
    @Test func childRunsWithoutTheHiddenMount() throws {
        var template = Array("/tmp/berth-hidden-XXXXXX".utf8CString)
        let directory = String(cString: try #require(template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }))
        defer { rmdir(directory) }
        #expect(mount("tmpfs", directory, "tmpfs", 0, "size=64k") == 0)
        defer { umount2(directory, 0) }

        var fds: [Int32] = [-1, -1]
        #expect(pipe2(&fds, O_CLOEXEC) == 0)
        var spec = SpawnSpec(executable: "sh", arguments: ["sh", "-c", "grep -c ' \(directory) ' /proc/self/mountinfo; echo $FROM_TEST"])
        spec.stdout = fds[1]
        spec.hiddenMount = directory
        spec.extraEnvironment = ["FROM_TEST=yes"]
        let pid = try Spawner.spawn(spec)
        close(fds[1])
        let output = String(decoding: readAll(fds[0]), as: UTF8.self)
        close(fds[0])
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        #expect(output == "0\nyes\n")
        #expect(readText("/proc/self/mountinfo")?.contains(" \(directory) ") == true)
    }

    @Test func missingProgramIsNotFound() throws {
        var spec = SpawnSpec(executable: "/nonexistent/crun", arguments: ["crun"])
        spec.hiddenMount = "/proc"
        do {
            _ = try Spawner.spawn(spec)
            Issue.record("spawning a missing program succeeded")
        } catch {
            #expect(error.code == .notFound)
        }
    }
}
