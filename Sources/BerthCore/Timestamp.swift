#if canImport(Glibc)
import Glibc
#endif

/// Wall-clock time with nanosecond resolution, independent of Foundation.
public struct Timestamp: Hashable, Sendable, Comparable, Codable {
    public var seconds: Int64
    public var nanos: Int32

    public init(seconds: Int64, nanos: Int32) {
        self.seconds = seconds
        self.nanos = nanos
    }

    public init(nanosecondsSinceEpoch value: Int64) {
        seconds = value / 1_000_000_000
        nanos = Int32(value % 1_000_000_000)
    }

    public var nanosecondsSinceEpoch: Int64 { seconds * 1_000_000_000 + Int64(nanos) }

    public static var now: Timestamp {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Timestamp(seconds: Int64(ts.tv_sec), nanos: Int32(ts.tv_nsec))
    }

    public static func < (a: Timestamp, b: Timestamp) -> Bool {
        (a.seconds, a.nanos) < (b.seconds, b.nanos)
    }
}
