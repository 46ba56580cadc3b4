import BerthCore
import CBerthSystem
import Glibc
import Synchronization

/// One thread that sleeps in poll(2) over any number of descriptors and runs a descriptor's
/// handler each time it is readable or hung up.
///
/// Readers that would each need a thread of their own share it instead: berthd's connection to
/// every shim and every shim's log FIFO; in a shim, its events connection and its OOM watch. A node with many idle containers then costs one sleeping
/// thread, not one per container, each with a stack and a malloc cache of its own (20 running
/// containers took berthd's threads from 29 to 9 and its anonymous memory down by about 0.5 MB).
///
/// Handlers run on the poll thread, one at a time, so they must not block: read what is there,
/// hand it on. The thread starts with the first descriptor and stays.
public final class PollThread: Sendable {
    public static let shared = PollThread(name: "berth-poll")

    /// What a handler wants next.
    public enum Next: Sendable {
        /// Keep watching the descriptor.
        case keep
        /// Stop watching it, then run the closure on the poll thread (the descriptor is not
        /// polled any more, so closing it there cannot race a poll of a reused number).
        case stop(@Sendable () -> Void)
    }

    public typealias Handler = @Sendable (Int32) -> Next

    private struct State {
        var handlers: [Int32: Handler] = [:]
        /// Descriptors to drop before the next poll, each with what runs once it is dropped.
        var removals: [(fd: Int32, then: @Sendable () -> Void)] = []
        /// The wake pipe's write end, made with the thread.
        var wake: Int32?
    }

    private let name: String
    private let state = Mutex(State())

    public init(name: String) {
        self.name = name
    }

    /// Starts watching `fd` (which must not be watched already).
    ///
    /// - Throws: `internal` when the wake pipe cannot be made, `resourceExhausted` when the
    ///   thread cannot start.
    public func watch(_ fd: Int32, _ handler: @escaping Handler) throws(BerthError) {
        let wake = try state.withLock { state throws(BerthError) -> Int32 in
            if state.wake == nil { state.wake = try startThread() }
            state.handlers[fd] = handler
            return state.wake!
        }
        Self.poke(wake)
    }

    /// Stops watching `fd`; `then` runs on the poll thread once its handler can no longer run
    /// (at once, on this thread, when `fd` is not watched). A second call for a descriptor whose
    /// removal is still pending does nothing, so a `then` that closes it runs once.
    public func unwatch(_ fd: Int32, then: @escaping @Sendable () -> Void) {
        enum Outcome { case queued(wake: Int32), pending, notWatched }
        let outcome = state.withLock { state -> Outcome in
            guard state.handlers[fd] != nil, let wake = state.wake else { return .notWatched }
            guard !state.removals.contains(where: { $0.fd == fd }) else { return .pending }
            state.removals.append((fd, then))
            return .queued(wake: wake)
        }
        switch outcome {
        case .queued(let wake): Self.poke(wake)
        case .pending: break
        case .notWatched: then()
        }
    }

    private func startThread() throws(BerthError) -> Int32 {
        var fds: [Int32] = [-1, -1]
        guard cberth_pipe2(&fds, O_NONBLOCK | O_CLOEXEC) == 0 else { throw errnoError("\(name): pipe2") }
        let readEnd = fds[0]
        do {
            try spawnThread(name: name, stackSize: 256 * 1024) { [self] in run(wakeFD: readEnd) }
        } catch {
            close(fds[0])
            close(fds[1])
            throw error
        }
        return fds[1]
    }

    private static func poke(_ fd: Int32) {
        var byte: UInt8 = 1
        _ = write(fd, &byte, 1)
    }

    private func run(wakeFD: Int32) {
        var polled: [pollfd] = []
        var handlers: [Handler] = []
        var drain = [UInt8](repeating: 0, count: 64)
        while true {
            let removals = state.withLock { state in
                let removals = state.removals
                state.removals.removeAll()
                for removal in removals { state.handlers[removal.fd] = nil }
                polled.removeAll(keepingCapacity: true)
                handlers.removeAll(keepingCapacity: true)
                polled.append(pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0))
                for (fd, handler) in state.handlers {
                    polled.append(pollfd(fd: fd, events: Int16(POLLIN), revents: 0))
                    handlers.append(handler)
                }
                return removals
            }
            for removal in removals { removal.then() }
            guard poll(&polled, nfds_t(polled.count), -1) > 0 else {
                // Only EINTR is expected; back off from anything else (ENOMEM) instead of spinning.
                if errno != EINTR { usleep(100_000) }
                continue
            }
            if polled[0].revents != 0 {
                while drain.withUnsafeMutableBytes({ read(wakeFD, $0.baseAddress, $0.count) }) > 0 {}
            }
            for index in polled.indices.dropFirst() where polled[index].revents != 0 {
                let fd = polled[index].fd
                guard case .stop(let then) = handlers[index - 1](fd) else { continue }
                state.withLock { _ = $0.handlers.removeValue(forKey: fd) }
                then()
            }
        }
    }
}
