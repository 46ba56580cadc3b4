import BerthCore
import BerthSystem
import BerthTTRPC
import CBerthSystem
import Glibc

/// How a process ended: its exit code, or 128 + the signal that killed it, and when.
public struct ExitStatus: Sendable, Hashable {
    public var code: UInt32
    public var exitedAt: ProtoTimestamp

    public init(code: UInt32, exitedAt: ProtoTimestamp) {
        self.code = code
        self.exitedAt = exitedAt
    }

    /// Decodes a `waitpid` status word (the W* macros are not visible to Swift).
    public init(waitStatus status: Int32, at time: ProtoTimestamp) {
        let signal = status & 0x7F
        code = signal == 0 ? UInt32((status >> 8) & 0xFF) : 128 + UInt32(signal)
        exitedAt = time
    }
}

/// The shim's only reaper of child processes.
///
/// The shim is a child subreaper, so every process of its containers ends up its child. One
/// thread waits for SIGCHLD with `sigwait` and reaps with `waitpid(-1, WNOHANG)`. Exits of
/// processes spawned through ``run(_:)`` go to their waiting caller; the pid is registered under
/// the same lock as the spawn, so the exit can never arrive unclaimed. Every other exit (container
/// processes, orphans) goes to `onExit`, on the reaper thread, which must not block.
public final class Reaper: Sendable {
    private struct State {
        /// Spawned by `run`: nil until the exit arrives.
        var waiting: [pid_t: ExitStatus?] = [:]
    }

    private let state = ConditionLock(State())
    private let onExit: @Sendable (pid_t, ExitStatus) -> Void

    /// - Parameter onExit: receives every exit not claimed by a `run` caller.
    public init(onExit: @escaping @Sendable (pid_t, ExitStatus) -> Void) {
        self.onExit = onExit
    }

    /// Blocks SIGCHLD in the calling thread (and every thread it starts later), makes this
    /// process a child subreaper and ignores SIGPIPE. Call from the main thread before any other
    /// thread starts.
    public static func prepareProcess() throws(BerthError) {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGCHLD)
        pthread_sigmask(SIG_BLOCK, &set, nil)
        signal(SIGPIPE, SIG_IGN)
        guard cberth_set_child_subreaper() == 0 else { throw errnoError("PR_SET_CHILD_SUBREAPER") }
    }

    /// Starts the reaping thread.
    public func start() throws(BerthError) {
        try startThread(name: "reaper") { [self] in
            var set = sigset_t()
            sigemptyset(&set)
            sigaddset(&set, SIGCHLD)
            while true {
                reapAll()
                var signal: Int32 = 0
                _ = sigwait(&set, &signal)
            }
        }
    }

    private func reapAll() {
        while true {
            var status: Int32 = 0
            let pid = waitpid(-1, &status, WNOHANG)
            if pid <= 0 {
                if pid < 0 && errno == EINTR { continue }
                return
            }
            let exit = ExitStatus(waitStatus: status, at: .now())
            let claimed = state.update { state -> Bool in
                guard state.waiting.keys.contains(pid) else { return false }
                state.waiting.updateValue(exit, forKey: pid)
                return true
            }
            if !claimed { onExit(pid, exit) }
        }
    }

    /// Spawns a process whose exit the caller collects with ``wait(_:)``.
    public func spawn(_ spec: SpawnSpec) throws(BerthError) -> pid_t {
        let (pid, failure) = try state.update { (state: inout State) throws(BerthError) in
            let launched = try Spawner.launch(spec)
            state.waiting.updateValue(nil, forKey: launched.pid)
            return launched
        }
        if let failure {
            _ = wait(pid)
            throw failure
        }
        return pid
    }

    /// Waits for a process started by ``spawn(_:)``.
    public func wait(_ pid: pid_t) -> ExitStatus {
        state.wait { state -> ExitStatus? in
            guard case .some(.some(let exit)) = state.waiting[pid] else { return nil }
            state.waiting.removeValue(forKey: pid)
            return exit
        }!
    }
}
