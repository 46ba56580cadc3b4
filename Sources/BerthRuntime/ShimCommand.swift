#if canImport(Glibc)
import Glibc
#endif
import BerthCore
import BerthSystem
import CBerthRuntime
import Foundation

/// Runs a shim binary's `start` or `delete` action (shim-v2-ttrpc.md §2.1, §2.4) and collects
/// what it wrote, on a blocking thread (many shims may start at once); the caller's task only
/// suspends.
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

    /// Runs the action to its end on a blocking thread; the caller's task only suspends.
    ///
    /// - Throws: `internal` when the binary cannot be started at all.
    func run() async throws(BerthError) -> Output {
        try await runBlocking { [self] () throws(BerthError) -> Output in
            try runSynchronously()
        }
    }

    /// Runs the action to its end on the calling thread, which it blocks (many shims may start
    /// at once, so never a thread of the cooperative pool).
    ///
    /// - Throws: `internal` when the binary cannot be started at all.
    func runSynchronously() throws(BerthError) -> Output {
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
        var err: (read: Int32, write: Int32)?
        if !combineOutput {
            do { err = try Self.makePipe() } catch {
                close(out.read)
                close(out.write)
                throw error
            }
        }
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
            close(out.read)
            if let err { close(err.read) }
            throw errnoError("run shim \(binary) \(arguments.last ?? "")", errno: rc)
        }
        let (outputs, timedOut) = Self.collect(pid: pid, outputs: [out.read] + (err.map { [$0.read] } ?? []),
                                               deadline: MonotonicInstant.now + timeout)
        let status = Self.reap(pid)
        return Output(status: status, stdout: outputs[0], stderr: outputs.count > 1 ? outputs[1] : [], timedOut: timedOut)
    }

    /// Reads `outputs` (closing each) until end of file and waits for the action to exit, in one
    /// poll(2) loop that also keeps the deadline, all on this thread: no timer thread, no second
    /// reader. End of file comes when the action and every process that still holds its output
    /// have closed it. At the deadline the action is killed (SIGKILL, by its PID, which stays its
    /// own until ``reap(_:)``) and its pipes are no longer waited for, so a daemonised child that
    /// kept them cannot stall the caller either.
    ///
    /// - Returns: what each pipe delivered, in the order of `outputs`, and whether the deadline
    ///   passed.
    private static func collect(pid: pid_t, outputs: [Int32], deadline: MonotonicInstant) -> (bytes: [[UInt8]], timedOut: Bool) {
        // Readable once the action has exited. Without pidfd_open (before Linux 5.3) only the
        // pipes are watched, and the exit is waited for without a deadline.
        let exitFD = cberth_pidfd_open(pid)
        defer { if exitFD >= 0 { close(exitFD) } }
        var bytes = [[UInt8]](repeating: [], count: outputs.count)
        var timedOut = false
        var open = Array(outputs.indices)
        var exited = exitFD < 0
        var buffer = [UInt8](repeating: 0, count: 16 << 10)
        var fds: [pollfd] = []
        while !open.isEmpty || !exited {
            fds.removeAll(keepingCapacity: true)
            for index in open { fds.append(pollfd(fd: outputs[index], events: Int16(POLLIN), revents: 0)) }
            if !exited { fds.append(pollfd(fd: exitFD, events: Int16(POLLIN), revents: 0)) }
            let wait = Int32(clamping: max(0, (MonotonicInstant.now.nanoseconds(to: deadline) + 999_999) / 1_000_000))
            let ready = poll(&fds, nfds_t(fds.count), wait)
            if ready < 0 && errno == EINTR { continue }
            if ready <= 0 {
                // The deadline passed (or poll cannot work at all).
                kill(pid, SIGKILL)
                timedOut = true
                break
            }
            for entry in fds where entry.revents != 0 {
                if entry.fd == exitFD {
                    exited = true
                    continue
                }
                guard let position = open.firstIndex(where: { outputs[$0] == entry.fd }) else { continue }
                let index = open[position]
                let n = buffer.withUnsafeMutableBytes { read(entry.fd, $0.baseAddress, $0.count) }
                if n > 0 {
                    bytes[index] += buffer[0..<n]
                } else if n == 0 || (errno != EINTR && errno != EAGAIN) {
                    close(entry.fd)
                    open.remove(at: position)
                }
            }
        }
        for index in open { close(outputs[index]) }
        return (bytes, timedOut)
    }

    /// Waits for the action to exit and reaps it; returns its exit code (128+signal if killed).
    private static func reap(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let signal = status & 0x7f
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal
    }

    private static func makePipe() throws(BerthError) -> (read: Int32, write: Int32) {
        var fds: [Int32] = [-1, -1]
        let rc = cberth_pipe_cloexec(&fds)
        guard rc == 0 else { throw errnoError("pipe", errno: rc) }
        return (fds[0], fds[1])
    }
}

/// Runs `body` with a NULL-terminated C array of `strings`.
private func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
    let pointers = strings.map { strdup($0) } + [nil]
    defer { for pointer in pointers { free(pointer) } }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}
