import BerthCore
import Dispatch

/// Runs blocking work (file I/O, syscalls that may sleep) on Dispatch's threads, so it never
/// holds up a thread of Swift's cooperative pool. Keeps the body's typed error.
public func runBlocking<T: Sendable>(_ body: @escaping @Sendable () throws(BerthError) -> T) async throws(BerthError) -> T {
    let result: Result<T, BerthError> = await withCheckedContinuation { continuation in
        DispatchQueue.global().async {
            do throws(BerthError) {
                continuation.resume(returning: .success(try body()))
            } catch {
                continuation.resume(returning: .failure(error))
            }
        }
    }
    return try result.get()
}

/// `runBlocking` for bodies that throw any error.
public func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async {
            continuation.resume(with: Result { try body() })
        }
    }
}

/// `runBlocking` for work that waits a long time on another process (a shim's `start` or
/// `delete`). Dispatch's global pool runs only as many blocking bodies at once as there are CPUs,
/// so 50 containers starting together would queue two at a time; a serial queue of its own runs
/// on Dispatch's overcommitting pool, which adds a thread when every other one is busy.
public func runBlockingOnOwnThread<T: Sendable>(
    label: String, _ body: @escaping @Sendable () throws(BerthError) -> T
) async throws(BerthError) -> T {
    let result: Result<T, BerthError> = await withCheckedContinuation { continuation in
        DispatchQueue(label: label).async {
            do throws(BerthError) {
                continuation.resume(returning: .success(try body()))
            } catch {
                continuation.resume(returning: .failure(error))
            }
        }
    }
    return try result.get()
}
