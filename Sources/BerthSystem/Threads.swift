import BerthCore
import CBerthSystem
import Glibc

/// Whether the calling thread was started by ``spawnThread(name:stackSize:_:)`` (a gRPC or
/// ttrpc connection's thread, a ``BlockingThreads`` worker), not by Swift's cooperative pool or
/// Dispatch: there, short blocking work (a database write of a few milliseconds) may run on the
/// calling thread, holding up only what that thread serves, instead of paying two thread hops.
public var isOwnThread: Bool { cberth_is_own_thread() != 0 }

/// Starts a detached POSIX thread that runs `body`.
///
/// BerthTTRPC runs its loops and handlers on plain threads so that it works in a process (the
/// shim) that never starts Swift's concurrency runtime, and so that a handler that blocks (Wait)
/// holds only its own thread; ``runBlocking(_:)`` runs blocking work on them too. `name` is cut
/// to the 15 bytes Linux keeps; `stackSize` (bytes) replaces the default reservation when given.
///
/// - Throws: `BerthError.resourceExhausted` when the system cannot create another thread.
public func spawnThread(name: String, stackSize: Int? = nil, _ body: @escaping @Sendable () -> Void) throws(BerthError) {
    let context = Unmanaged.passRetained(ThreadBody(name: name, run: body)).toOpaque()
    var attributes = pthread_attr_t()
    pthread_attr_init(&attributes)
    defer { pthread_attr_destroy(&attributes) }
    if let stackSize { pthread_attr_setstacksize(&attributes, stackSize) }
    var thread = pthread_t()
    let rc = pthread_create(&thread, &attributes, { raw in
        let body = Unmanaged<ThreadBody>.fromOpaque(raw!).takeRetainedValue()
        _ = cberth_set_thread_name(body.name)
        cberth_mark_own_thread()
        body.run()
        return nil
    }, context)
    guard rc == 0 else {
        Unmanaged<ThreadBody>.fromOpaque(context).release()
        throw BerthError(.resourceExhausted, "thread \(name): \(errnoText(rc))")
    }
    pthread_detach(thread)
}

private final class ThreadBody {
    let name: String
    let run: @Sendable () -> Void
    init(name: String, run: @escaping @Sendable () -> Void) {
        self.name = name
        self.run = run
    }
}

/// A value guarded by a pthread mutex with a condition variable, for a thread that must sleep until
/// another thread changes the value (a call waiting for its response, shutdown waiting for
/// handlers). `Mutex` from Synchronization cannot wait; this can.
public final class ConditionLock<State>: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var state: State

    public init(_ state: State) {
        self.state = state
        pthread_mutex_init(mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    /// Whom ``update(waking:_:)`` wakes afterwards.
    public enum Waking: Sendable {
        /// Every waiter: right when waiters wait for different things.
        case all
        /// One waiter: enough when every waiter waits for the same thing and one can take it
        /// (an idle worker for a queued job), and no herd of threads wakes to find nothing.
        case one
        /// Nobody: the change can make no waiter ready.
        case none
    }

    /// Runs `body` under the lock and wakes waiters afterwards (every waiter by default).
    public func update<R, E: Error>(waking: Waking = .all, _ body: (inout State) throws(E) -> R) throws(E) -> R {
        pthread_mutex_lock(mutex)
        defer {
            switch waking {
            case .all: pthread_cond_broadcast(condition)
            case .one: pthread_cond_signal(condition)
            case .none: break
            }
            pthread_mutex_unlock(mutex)
        }
        return try body(&state)
    }

    /// Sleeps until `ready` returns a value, or until `deadline` passes (then returns nil).
    /// `ready` runs under the lock each time the state changes.
    public func wait<R>(until deadline: MonotonicInstant? = nil, _ ready: (inout State) -> R?) -> R? {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        let wakeAt = deadline?.timespec
        while true {
            if let value = ready(&state) { return value }
            if var wakeAt {
                if pthread_cond_timedwait(condition, mutex, &wakeAt) == ETIMEDOUT {
                    return ready(&state)
                }
            } else {
                pthread_cond_wait(condition, mutex)
            }
        }
    }
}

extension ConditionLock {
    /// Sleeps until `condition` holds; false when `deadline` passed first.
    @discardableResult
    public func wait(until deadline: MonotonicInstant? = nil, for condition: (State) -> Bool) -> Bool {
        let met: Bool? = wait(until: deadline) { (state: inout State) -> Bool? in condition(state) ? true : nil }
        return met != nil
    }
}

/// `strerror` for an errno value.
public func errnoText(_ code: Int32) -> String {
    String(cString: strerror(code))
}
