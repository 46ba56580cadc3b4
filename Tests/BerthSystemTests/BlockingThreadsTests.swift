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
    /// Jobs that each block for 100 ms, all submitted at once, finish together: every blocked
    /// job has a thread of its own rather than waiting behind the others.
    @Test func blockedJobsRunSideBySide() async throws {
        let pool = BlockingThreads(maximumThreads: 64, idleTimeout: .seconds(1))
        let start = ContinuousClock.now
        let finished = Counter()
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<32 {
                group.addTask {
                    await withCheckedContinuation { continuation in
                        pool.submit {
                            usleep(100_000)
                            finished.increment()
                            continuation.resume()
                        }
                    }
                }
            }
        }
        #expect(finished.value == 32)
        #expect(ContinuousClock.now - start < .seconds(2), "32 jobs of 100 ms ran one after another")
    }

    /// With fewer threads than jobs, the rest wait their turn and still all run, in order of
    /// submission per thread.
    @Test func jobsBeyondTheLimitWaitTheirTurn() async throws {
        let pool = BlockingThreads(maximumThreads: 2, idleTimeout: .milliseconds(50))
        let finished = Counter()
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<20 {
                group.addTask {
                    await withCheckedContinuation { continuation in
                        pool.submit {
                            usleep(5_000)
                            finished.increment()
                            continuation.resume()
                        }
                    }
                }
            }
        }
        #expect(finished.value == 20)
        // Idle threads have left; a new job still runs.
        usleep(200_000)
        let result = try await runBlocking { () throws(BerthError) -> Int in 42 }
        #expect(result == 42)
    }
}
