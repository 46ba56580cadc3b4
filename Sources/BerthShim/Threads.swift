import BerthCore
import BerthSystem
import BerthTTRPC
import Glibc

/// Starts a detached POSIX thread running `body` (the shim uses no Swift concurrency), on
/// BerthTTRPC's thread helper. Stacks are small: every stdio copier is a thread, and a stack
/// counts towards RSS as far as it is touched, but the reservation is kept modest too.
///
/// - Throws: `BerthError.resourceExhausted` when no thread can be created.
func startThread(name: String, _ body: @escaping @Sendable () -> Void) throws(BerthError) {
    try spawnThread(name: name, stackSize: 256 * 1024, body)
}

/// Sleeps the calling thread.
func sleep(for duration: Duration) {
    let nanoseconds = max(duration.wholeNanoseconds, 0)
    var request = timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
    var remaining = timespec()
    while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
}
