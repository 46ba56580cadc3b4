#if canImport(Glibc)
import Glibc
#endif
import BerthCore
import BerthSystem
import CBerthRuntime
import Dispatch
import Foundation

/// Runs a shim binary's `start` or `delete` action (shim-v2-ttrpc.md §2.1, §2.4) and collects
/// what it wrote. Runs on a Dispatch thread of its own (many shims may start at once); the caller's
/// task only suspends.
struct ShimCommand: Sendable {
    var binary: String
    var arguments: [String]
    var directory: String
    var environment: [String: String]
    /// Written to the shim's stdin, which is then closed (empty: stdin is empty).
    var stdin: [UInt8] = []
    /// stdout and stderr into one buffer (`start`), or apart (`delete`).
    var combineOutput: Bool
    /// The action is killed (SIGKILL, by its PID) when it runs longer.
    var timeout: Duration

    struct Output: Sendable {
        var status: Int32
        var stdout: [UInt8]
        var stderr: [UInt8]
        var timedOut: Bool

        var succeeded: Bool { status == 0 && !timedOut }
        var stdoutText: String { String(decoding: stdout, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) }
        var stderrText: String { String(decoding: stderr, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) }
    }

    /// Runs the action to its end.
    ///
    /// - Throws: `internal` when the binary cannot be started at all.
    func run() async throws(BerthError) -> Output {
        try await runBlocking { [self] () throws(BerthError) -> Output in
            try runSynchronously()
        }
    }

    private func runSynchronously() throws(BerthError) -> Output {
        if !stdin.isEmpty && stdin.count > 60 * 1024 {
            throw .invalidArgument("shim options of \(stdin.count) bytes are too large")
        }
        // stdin: a pipe that already holds all the bytes and is closed for writing, so the shim
        // reads them and then end of file, and no write of ours can raise SIGPIPE.
        let input = try Self.makePipe()
        defer { close(input.read) }
        do {
            defer { close(input.write) }
            if !stdin.isEmpty { try FileSystem.writeAll(fd: input.write, stdin) }
        }
        let out = try Self.makePipe()
        var outRead: Int32? = out.read
        defer { if let fd = outRead { close(fd) } }
        var err: (read: Int32, write: Int32)?
        if !combineOutput {
            do { err = try Self.makePipe() } catch { close(out.write); throw error }
        }
        var errRead = err?.read
        defer { if let fd = errRead { close(fd) } }

        let argv = [binary] + arguments
        let envp = environment.map { "\($0.key)=\($0.value)" }
        var pid: pid_t = 0
        let rc = withCStrings(argv) { argvPointer in
            withCStrings(envp) { envPointer in
                cberth_spawn(&pid, binary, argvPointer, envPointer, directory, input.read, out.write, err?.write ?? out.write)
            }
        }
        close(out.write)
        if let err { close(err.write) }
        guard rc == 0 else {
            throw errnoError("run shim \(binary) \(arguments.last ?? "")", errno: rc)
        }

        // Killed by its PID when it overstays; never after it was reaped (the PID could be reused).
        let guardState = KillGuard(pid: pid)
        let timer = DispatchWorkItem { guardState.killIfRunning() }
        let (seconds, attoseconds) = timeout.components
        DispatchQueue.global().asyncAfter(
            deadline: .now() + .nanoseconds(Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000)), execute: timer)
        defer { timer.cancel() }

        // stderr drains on another thread so neither pipe can fill up and stall the shim.
        let errorOutput = CollectedBytes()
        let group = DispatchGroup()
        if let fd = errRead {
            errRead = nil
            DispatchQueue.global().async(group: group) {
                errorOutput.set(Self.readToEnd(fd))
                close(fd)
            }
        }
        let output = Self.readToEnd(out.read)
        close(out.read)
        outRead = nil
        group.wait()
        let status = guardState.reap()
        return Output(status: status, stdout: output, stderr: errorOutput.get(), timedOut: guardState.timedOut)
    }

    private static func makePipe() throws(BerthError) -> (read: Int32, write: Int32) {
        var fds: [Int32] = [-1, -1]
        let rc = cberth_pipe_cloexec(&fds)
        guard rc == 0 else { throw errnoError("pipe", errno: rc) }
        return (fds[0], fds[1])
    }

    /// Reads until end of file, which comes when the action and every process that still holds
    /// its output have closed it (a shim's daemonised child must not keep them).
    private static func readToEnd(_ fd: Int32) -> [UInt8] {
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n > 0 {
                bytes += buffer[0..<n]
            } else if n < 0 && errno == EINTR {
                continue
            } else {
                return bytes
            }
        }
    }
}

/// Lets a timer kill a child by PID only while the child is not yet reaped.
private final class KillGuard: @unchecked Sendable {
    private let lock = NSLock()
    private let pid: pid_t
    private var reaped = false
    private var killed = false

    init(pid: pid_t) { self.pid = pid }

    var timedOut: Bool { lock.withLock { killed } }

    func killIfRunning() {
        lock.withLock {
            guard !reaped else { return }
            killed = true
            kill(pid, SIGKILL)
        }
    }

    /// Waits for the child to exit, then reaps it; returns its exit code (128+signal if killed).
    func reap() -> Int32 {
        var info = siginfo_t()
        while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) != 0 && errno == EINTR {}
        return lock.withLock {
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            reaped = true
            let signal = status & 0x7f
            return signal == 0 ? (status >> 8) & 0xff : 128 + signal
        }
    }
}

/// Runs `body` with a NULL-terminated C array of `strings`.
private func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
    let pointers = strings.map { strdup($0) } + [nil]
    defer { for pointer in pointers { free(pointer) } }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}

private final class CollectedBytes: @unchecked Sendable {
    private let lock = NSLock()
    private var value: [UInt8] = []
    func set(_ bytes: [UInt8]) { lock.withLock { value = bytes } }
    func get() -> [UInt8] { lock.withLock { value } }
}
