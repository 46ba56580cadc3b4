import BerthCore

/// Runs blocking work (file I/O, SQLite, syscalls that may sleep, waiting for another process)
/// on ``BlockingThreads``, so it never holds up a thread of Swift's cooperative pool. Keeps the
/// body's typed error.
///
/// Not Dispatch's global queues: on Linux Swift's cooperative pool runs on the same root queue,
/// which starts only as many threads as there are CPUs and adds more only after a stall of about
/// a second. Bodies that block there (a read waiting for a database connection that an
/// `async` caller holds) starve the very tasks they wait for; 30 parallel `ctr containers
/// create` took five seconds that way.
public func runBlocking<T: Sendable>(_ body: @escaping @Sendable () throws(BerthError) -> T) async throws(BerthError) -> T {
    let result: Result<T, BerthError> = await withCheckedContinuation { continuation in
        BlockingThreads.shared.submit {
            do throws(BerthError) {
                continuation.resume(returning: .success(try body()))
            } catch {
                continuation.resume(returning: .failure(error))
            }
        }
    }
    return try result.get()
}

/// Runs short blocking work (a few directory operations: no waiting on other processes, no tree
/// walks) on the calling thread when that is one of Berth's own threads, which may block for
/// that long; elsewhere (Swift's cooperative pool) as ``runBlocking(_:)``. On a connection's
/// thread this saves the two thread switches of the hop, which cost more than the work.
public func runShortBlocking<T: Sendable>(_ body: @escaping @Sendable () throws(BerthError) -> T) async throws(BerthError) -> T {
    if isOwnThread { return try body() }
    return try await runBlocking(body)
}

/// `runBlocking` for bodies that throw any error.
public func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        BlockingThreads.shared.submit {
            continuation.resume(with: Result { try body() })
        }
    }
}

/// An elastic set of threads for blocking work: a job runs at once on an idle thread, or on a
/// new one while fewer than ``maximumThreads`` exist; beyond that it waits its turn. A thread
/// idle for ``idleTimeout`` exits, so an idle daemon keeps few. The shared pool's timeout is
/// short: each thread's stack stays as deep as its deepest job went (SQLite and JSON coding take
/// tens of KB) until it exits, and after a burst of 50 container starts 19 threads lingered, while
/// a new thread costs some 50 µs.
public final class BlockingThreads: Sendable {
    public static let shared = BlockingThreads(maximumThreads: 256, idleTimeout: .seconds(2))

    public typealias Job = @Sendable () -> Void

    private struct State {
        var jobs: [Job] = []
        var next = 0
        var threads = 0
        var idle = 0

        var queued: Int { jobs.count - next }

        mutating func take() -> Job? {
            guard next < jobs.count else { return nil }
            let job = jobs[next]
            next += 1
            if next == jobs.count {
                jobs.removeAll(keepingCapacity: true)
                next = 0
            }
            return job
        }
    }

    public let maximumThreads: Int
    public let idleTimeout: Duration
    private let state = ConditionLock(State())

    public init(maximumThreads: Int, idleTimeout: Duration) {
        self.maximumThreads = maximumThreads
        self.idleTimeout = idleTimeout
    }

    /// Queues `job`; starts a thread for it when none is idle. If no thread can be created and
    /// none exists, runs it on the calling thread rather than never.
    public func submit(_ job: @escaping Job) {
        let spawn = state.update(waking: .one) { state -> Bool in
            state.jobs.append(job)
            guard state.idle < state.queued, state.threads < maximumThreads else { return false }
            state.threads += 1
            return true
        }
        guard spawn else { return }
        do {
            try spawnThread(name: "berth-blocking") { [self] in work() }
        } catch {
            let orphaned = state.update(waking: .none) { state -> Job? in
                state.threads -= 1
                return state.threads == 0 ? state.take() : nil
            }
            orphaned?()
        }
    }

    private func work() {
        while true {
            state.update(waking: .none) { $0.idle += 1 }
            let taken = state.wait(until: .now + idleTimeout) { state -> Job? in
                guard let job = state.take() else { return nil }
                state.idle -= 1
                return job
            }
            // Timed out: a job queued since the last look is still this thread's (submit saw it
            // idle and started none), else the thread leaves.
            let job = taken ?? state.update(waking: .none) { state -> Job? in
                state.idle -= 1
                if let job = state.take() { return job }
                state.threads -= 1
                return nil
            }
            guard let job else { return }
            job()
        }
    }
}
