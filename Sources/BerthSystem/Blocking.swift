import Dispatch
import BerthCore

/// Runs blocking work (file I/O, SQLite, syscalls that may sleep) on Dispatch's threads, so it
/// never holds up a thread of Swift's cooperative pool.
public func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async {
            continuation.resume(with: Result { try body() })
        }
    }
}
