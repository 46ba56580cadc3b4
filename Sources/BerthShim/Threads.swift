import BerthCore
import CBerthSystem
import Glibc

/// Starts a detached POSIX thread running `body` (the shim uses no Swift concurrency).
///
/// - Throws: `BerthError.resourceExhausted` when no thread can be created.
public func startThread(name: String, _ body: @escaping @Sendable () -> Void) throws(BerthError) {
    final class Box {
        let name: String
        let body: @Sendable () -> Void
        init(name: String, body: @escaping @Sendable () -> Void) {
            self.name = name
            self.body = body
        }
    }
    let context = Unmanaged.passRetained(Box(name: name, body: body)).toOpaque()
    var attributes = pthread_attr_t()
    pthread_attr_init(&attributes)
    // Small stacks: every stdio copier and request is a thread, and stacks count towards RSS
    // only as far as they are touched, but keep the reservation modest too.
    pthread_attr_setstacksize(&attributes, 256 * 1024)
    defer { pthread_attr_destroy(&attributes) }
    var thread = pthread_t()
    let rc = pthread_create(&thread, &attributes, { raw in
        let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
        _ = prctlName(box.name)
        box.body()
        return nil
    }, context)
    guard rc == 0 else {
        Unmanaged<Box>.fromOpaque(context).release()
        throw BerthError(.resourceExhausted, "thread \(name): \(String(cString: strerror(rc)))")
    }
    pthread_detach(thread)
}

private func prctlName(_ name: String) -> Int32 {
    cberth_set_thread_name(String(name.prefix(15)))
}

/// A value guarded by a pthread mutex, with a condition variable so threads can sleep until it
/// changes. Every `update` wakes all waiters.
public final class Monitor<State>: @unchecked Sendable {
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

    /// Runs `body` under the lock, then wakes every waiter.
    public func update<R, E: Error>(_ body: (inout State) throws(E) -> R) throws(E) -> R {
        pthread_mutex_lock(mutex)
        defer {
            pthread_cond_broadcast(condition)
            pthread_mutex_unlock(mutex)
        }
        return try body(&state)
    }

    /// Sleeps until `ready` returns non-nil (checked under the lock after every update), or until
    /// `timeout` passes (then returns nil).
    public func wait<R>(timeout: Duration? = nil, _ ready: (inout State) -> R?) -> R? {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        var wakeAt = timeout.map(monotonicDeadline)
        while true {
            if let value = ready(&state) { return value }
            if wakeAt != nil {
                if pthread_cond_timedwait(condition, mutex, &wakeAt!) == ETIMEDOUT { return ready(&state) }
            } else {
                pthread_cond_wait(condition, mutex)
            }
        }
    }
}

private func monotonicDeadline(after duration: Duration) -> timespec {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    let (seconds, attoseconds) = max(duration, .zero).components
    let nanoseconds = Int(now.tv_nsec) + Int(attoseconds / 1_000_000_000)
    var result = timespec()
    result.tv_sec = now.tv_sec + Int(seconds) + nanoseconds / 1_000_000_000
    result.tv_nsec = nanoseconds % 1_000_000_000
    return result
}

/// Sleeps the calling thread.
func sleep(for duration: Duration) {
    let (seconds, attoseconds) = duration.components
    var request = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
    var remaining = timespec()
    while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
}
