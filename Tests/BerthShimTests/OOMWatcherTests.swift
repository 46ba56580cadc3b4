import BerthCore
@testable import BerthShim
import Glibc
import Synchronization
import Testing

/// The OOM watcher's parsing, and its v2 (inotify) path on a plain file standing in for
/// `memory.events`; the v1 eventfd path needs a real memory cgroup and is covered by the
/// integration tests (`TaskOptionsTests`).
@Suite struct OOMWatcherTests {
    @Test func memoryCgroupFromProcCgroupV1() {
        let text = """
        9:name=systemd:/ns/c1
        5:devices:/ns/c1
        4:memory:/ns/c1
        2:cpu,cpuacct:/ns/c1
        0::/ns/c1

        """
        #expect(OOMWatcher.target(procCgroup: text, unified: false) == .v1(directory: "/sys/fs/cgroup/memory/ns/c1"))
        #expect(OOMWatcher.target(procCgroup: "3:cpu,memory:/", unified: false, root: "/cg") == .v1(directory: "/cg/memory"))
        #expect(OOMWatcher.target(procCgroup: "1:cpu:/x\n0::/x\n", unified: false) == nil)
    }

    @Test func memoryCgroupFromProcCgroupV2() {
        #expect(OOMWatcher.target(procCgroup: "0::/ns/c1\n", unified: true) == .v2(directory: "/sys/fs/cgroup/ns/c1"))
        #expect(OOMWatcher.target(procCgroup: "0::/\n", unified: true, root: "/cg") == .v2(directory: "/cg"))
        #expect(OOMWatcher.target(procCgroup: "4:memory:/ns/c1\n", unified: true) == nil)
    }

    @Test func oomKillCounter() {
        #expect(OOMWatcher.oomKills(memoryEvents: "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n") == 2)
        #expect(OOMWatcher.oomKills(memoryEvents: "low 0\n") == 0)
    }

    /// `memory.events` growing its `oom_kill` count reports an OOM, once per increase; other
    /// changes do not; after `remove` nothing is reported.
    @Test func v2ReportsGrowingOOMKillCount() throws {
        var template = Array("/tmp/berth-oom-XXXXXX".utf8CString)
        let directory = try #require(template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }.map { String(cString: $0) })
        defer {
            unlink(directory + "/memory.events")
            rmdir(directory)
        }
        let events = directory + "/memory.events"
        func write(_ text: String) throws {
            let fd = open(events, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            try #require(fd >= 0)
            defer { close(fd) }
            let bytes = Array(text.utf8)
            #expect(bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) } == bytes.count)
        }
        try write("oom 0\noom_kill 0\n")

        let reports = Mutex<[String]>([])
        let watcher = OOMWatcher { id in reports.withLock { $0.append(id) } }
        try watcher.add(containerID: "c1", target: .v2(directory: directory))
        func settle(until count: Int) {
            for _ in 0..<200 where reports.withLock({ $0.count }) < count { usleep(10_000) }
        }

        try write("oom 1\noom_kill 1\n")
        settle(until: 1)
        #expect(reports.withLock { $0 } == ["c1"])

        try write("oom 2\noom_kill 1\n")
        usleep(200_000)
        #expect(reports.withLock { $0 } == ["c1"], "no new kill, no report")

        try write("oom 3\noom_kill 3\n")
        settle(until: 2)
        #expect(reports.withLock { $0 } == ["c1", "c1"])

        watcher.remove(containerID: "c1")
        usleep(100_000)
        try write("oom 4\noom_kill 4\n")
        usleep(200_000)
        #expect(reports.withLock { $0 }.count == 2, "removed watches report nothing")
    }
}
