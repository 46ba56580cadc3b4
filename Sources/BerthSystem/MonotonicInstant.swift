import Glibc

/// A point in time on CLOCK_MONOTONIC, in nanoseconds: the deadlines of ``ConditionLock`` waits
/// and of ttrpc calls.
///
/// ttrpc and the shim keep time with this rather than `ContinuousClock`. Reading it is one
/// `clock_gettime`, and its arithmetic is inlined integer arithmetic, whereas `ContinuousClock`
/// lives in the Concurrency runtime and `Duration` arithmetic in the standard library's 128-bit
/// integer code. In a running berth-shim those calls alone mapped three 64 KiB windows of code
/// that nothing else there touches.
public struct MonotonicInstant: Comparable, Hashable, Sendable {
    /// Nanoseconds on CLOCK_MONOTONIC (since boot, on Linux).
    public let nanoseconds: Int64

    public init(nanoseconds: Int64) {
        self.nanoseconds = nanoseconds
    }

    public static var now: MonotonicInstant {
        var time = Glibc.timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return MonotonicInstant(nanoseconds: Int64(time.tv_sec) &* 1_000_000_000 &+ Int64(time.tv_nsec))
    }

    /// `nanoseconds` later (earlier when negative), saturating at the ends of the range.
    public func advanced(byNanoseconds nanoseconds: Int64) -> MonotonicInstant {
        let (sum, overflow) = self.nanoseconds.addingReportingOverflow(nanoseconds)
        return MonotonicInstant(nanoseconds: overflow ? (nanoseconds < 0 ? .min : .max) : sum)
    }

    /// `duration` later (earlier when negative), saturating at the ends of the range.
    public static func + (instant: MonotonicInstant, duration: Duration) -> MonotonicInstant {
        instant.advanced(byNanoseconds: duration.wholeNanoseconds)
    }

    public static func < (lhs: MonotonicInstant, rhs: MonotonicInstant) -> Bool {
        lhs.nanoseconds < rhs.nanoseconds
    }

    /// Nanoseconds from this instant to `later` (negative when `later` is earlier), saturating.
    public func nanoseconds(to later: MonotonicInstant) -> Int64 {
        let (difference, overflow) = later.nanoseconds.subtractingReportingOverflow(nanoseconds)
        return overflow ? (later.nanoseconds < nanoseconds ? .min : .max) : difference
    }

    /// The instant as `pthread_cond_timedwait` and `clock_nanosleep` want it; never before 0.
    var timespec: Glibc.timespec {
        let clamped = max(nanoseconds, 0)
        return Glibc.timespec(tv_sec: Int(clamped / 1_000_000_000), tv_nsec: Int(clamped % 1_000_000_000))
    }
}

extension Duration {
    /// The duration in whole nanoseconds (truncated towards zero), saturating at `Int64`'s range.
    public var wholeNanoseconds: Int64 {
        Int64(clamping: attoseconds / 1_000_000_000)
    }
}
