import BerthCore
import BerthSystem
import Glibc
import Synchronization
import Testing

/// A count jobs raise from their threads.
final class Counter: Sendable {
    private let count = Mutex(0)
    func increment() { count.withLock { $0 += 1 } }
    var value: Int { count.withLock { $0 } }
}

@Suite("blocking threads")
struct BlockingThreadsTests {
    /// Submits `count` jobs that each sleep `microseconds` to `pool`, all at once, and returns
    /// once every one has finished, with the count of those that ran.
    static func run(_ count: Int, jobsOf microseconds: UInt32, on pool: BlockingThreads) async -> Counter {
        let finished = Counter()
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<count {
                group.addTask {
                    await withCheckedContinuation { continuation in
                        pool.submit {
                            usleep(microseconds)
                            finished.increment()
                            continuation.resume()
                        }
                    }
                }
            }
        }
        return finished
    }

    /// Jobs that each block for 100 ms, all submitted at once, finish together: every blocked
    /// job has a thread of its own rather than waiting behind the others.
    @Test func blockedJobsRunSideBySide() async throws {
        let pool = BlockingThreads(maximumThreads: 64, idleTimeout: .seconds(1))
        let start = ContinuousClock.now
        let finished = await Self.run(32, jobsOf: 100_000, on: pool)
        #expect(finished.value == 32)
        // One after another they would take 3.2 s; side by side, 0.1 s and thread start-up (under a
        // parallel test run, up to seconds).
        #expect(ContinuousClock.now - start < .seconds(3), "32 jobs of 100 ms ran one after another")
    }

    /// With fewer threads than jobs, the rest wait their turn and still all run, in order of
    /// submission per thread.
    @Test func jobsBeyondTheLimitWaitTheirTurn() async throws {
        let pool = BlockingThreads(maximumThreads: 2, idleTimeout: .milliseconds(50))
        let finished = await Self.run(20, jobsOf: 5_000, on: pool)
        #expect(finished.value == 20)
        // Idle threads have left; a new job still runs.
        usleep(200_000)
        let result = try await runBlocking { () throws(BerthError) -> Int in 42 }
        #expect(result == 42)
    }
}

@Suite struct MonotonicInstantTests {
    @Test func arithmeticSaturates() {
        let start = MonotonicInstant(nanoseconds: 1_000)
        #expect((start + .milliseconds(2)).nanoseconds == 2_001_000)
        #expect((start + .seconds(-1)).nanoseconds == 1_000 - 1_000_000_000)
        #expect(MonotonicInstant(nanoseconds: .max - 1) + .seconds(1) == MonotonicInstant(nanoseconds: .max))
        #expect(MonotonicInstant(nanoseconds: .min + 1) + .seconds(-1) == MonotonicInstant(nanoseconds: .min))
        #expect(start.nanoseconds(to: MonotonicInstant(nanoseconds: 500)) == -500)
        #expect(Duration.seconds(1 << 40).wholeNanoseconds == .max)
        #expect(Duration.nanoseconds(-3).wholeNanoseconds == -3)
    }

    @Test func waitGivesUpAtItsDeadline() {
        let lock = ConditionLock(false)
        let started = MonotonicInstant.now
        let woken = lock.wait(until: started + .milliseconds(50)) { $0 ? true : nil }
        #expect(woken == nil)
        #expect(started.nanoseconds(to: .now) >= 50_000_000)
    }

    /// Threads Berth starts count as its own; the cooperative pool's do not.
    @Test func ownThreadsAreKnown() async throws {
        #expect(!isOwnThread)
        let onBlockingThread = try await runBlocking { isOwnThread }
        #expect(onBlockingThread)
        let spawned = await withCheckedContinuation { continuation in
            do { try spawnThread(name: "own-test") { continuation.resume(returning: isOwnThread) } } catch { continuation.resume(returning: false) }
        }
        #expect(spawned)
    }
}
