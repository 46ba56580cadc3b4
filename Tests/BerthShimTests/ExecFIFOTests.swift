@testable import BerthShim
import BerthCore
import Glibc
import Testing

/// The shim's side of runc's exec FIFO handshake, against a stand-in for runc's init: a shell
/// that opens the FIFO for writing, writes one byte and closes it, as init's exec does.
@Suite struct ExecFIFOTests {
    let directory: String

    init() throws {
        var template = Array("/tmp/berth-execfifo-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        directory = String(cString: try #require(made))
    }

    private func spawnShell(_ script: String) throws -> pid_t {
        try Spawner.spawn(SpawnSpec(executable: "/bin/sh", arguments: ["sh", "-c", script]))
    }

    private func reap(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return status
    }

    @Test func handshakeReadsInitsByteAndRemovesTheFIFO() throws {
        defer { rmdir(directory) }
        let fifo = directory + "/exec.fifo"
        #expect(mkfifo(fifo, 0o622) == 0)
        // Like init: blocks until the reader opens, writes "0", then holds the FIFO a moment
        // before "exec" closes it; the handshake must wait for that close.
        let initPID = try spawnShell("exec 3>\(fifo); printf 0 >&3; sleep 0.2; exec 3>&-; sleep 0.2")
        let started = ContinuousClock.now
        #expect(try RuntimeDriver.startThroughExecFIFO(path: fifo, initPID: initPID))
        #expect(ContinuousClock.now - started >= .milliseconds(150))
        #expect(access(fifo, F_OK) != 0)
        _ = reap(initPID)
    }

    @Test func noFIFOMeansTheRuntimeStarts() throws {
        defer { rmdir(directory) }
        #expect(try !RuntimeDriver.startThroughExecFIFO(path: directory + "/exec.fifo", initPID: getpid()))
        let plain = directory + "/exec.fifo"
        let fd = open(plain, O_CREAT | O_WRONLY | O_CLOEXEC, 0o600)
        close(fd)
        defer { unlink(plain) }
        #expect(try !RuntimeDriver.startThroughExecFIFO(path: plain, initPID: getpid()))
    }

    @Test func deadInitFailsInsteadOfHanging() throws {
        defer { rmdir(directory) }
        let fifo = directory + "/exec.fifo"
        #expect(mkfifo(fifo, 0o622) == 0)
        defer { unlink(fifo) }
        let gone = try spawnShell("exit 0")
        _ = reap(gone)
        do {
            _ = try RuntimeDriver.startThroughExecFIFO(path: fifo, initPID: gone)
            Issue.record("a start with a dead init succeeded")
        } catch {
            #expect(error.message.contains("container process is already dead"))
        }
        #expect(access(fifo, F_OK) == 0)
    }

    @Test func initThatExitedAfterWritingCountsAsStarted() throws {
        defer { rmdir(directory) }
        let fifo = directory + "/exec.fifo"
        #expect(mkfifo(fifo, 0o622) == 0)
        let initPID = try spawnShell("exec 3>\(fifo); printf 0 >&3")
        #expect(try RuntimeDriver.startThroughExecFIFO(path: fifo, initPID: initPID))
        _ = reap(initPID)
        #expect(access(fifo, F_OK) != 0)
    }
}
