import BerthCore
import BerthMetadata
import BerthSystem
import GRPCCore
import Synchronization

/// Gives memory back once berthd has been quiet for ``quietPeriod`` after serving calls.
///
/// A burst of work (50 containers started at once, say) leaves behind what it needed at its
/// peak: one SQLite reader connection per concurrent read, each with its page and statement
/// caches, and free chunks spread over glibc's heaps. Measured after such a burst with 20
/// containers running, that was about 2 MB of berthd's 6 MB of anonymous memory. When the daemon
/// goes quiet this closes the idle readers and trims the heaps; the next call reopens a reader
/// (well under a millisecond). Steady polling, as kubelet's, keeps the daemon from ever counting
/// as quiet, and needs no more than the readers it keeps.
final class IdleMemoryRelease: Sendable {
    static let quietPeriod: Duration = .seconds(1)

    private struct State {
        var lastCall = MonotonicInstant.now
        var waiting = false
    }

    private let state = Mutex(State())
    private let release: @Sendable () async -> Void

    init(metadata: MetadataStore) {
        release = {
            try? await runBlocking {
                metadata.releaseMemory()
                Memory.releaseFreePages()
            }
        }
    }

    /// Marks a call; the release runs after the quiet period that follows the last one.
    func noteCall() {
        let startWaiting = state.withLock { state -> Bool in
            state.lastCall = .now
            defer { state.waiting = true }
            return !state.waiting
        }
        guard startWaiting else { return }
        Task { await waitForQuiet() }
    }

    private func waitForQuiet() async {
        while true {
            let remaining = state.withLock { state -> Duration? in
                let quietUntil = state.lastCall + Self.quietPeriod
                let now = MonotonicInstant.now
                guard now < quietUntil else {
                    state.waiting = false
                    return nil
                }
                return .nanoseconds(now.nanoseconds(to: quietUntil))
            }
            guard let remaining else { break }
            try? await Task.sleep(for: remaining)
        }
        await release()
    }
}
