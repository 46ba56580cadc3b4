import BerthCore
import BerthTTRPC

/// A flat message of `uint64` fields whose names are the keys of a cgroup stat file
/// (`memory.stat`, `cpu.stat`, `memory.events`): `fields[n]` is the key for field number n+1.
/// Only keys present in `values` are encoded.
public struct KeyedCounters: Sendable, Hashable {
    public var values: [String: UInt64] = [:]
    public init(_ values: [String: UInt64] = [:]) { self.values = values }

    func encode(to writer: inout ProtoWriter, fields: [String]) {
        for (index, key) in fields.enumerated() {
            if let value = values[key] { writer.uint(index + 1, value) }
        }
    }

    /// Parses `key value` lines.
    public init(statFile text: String) {
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ")
            guard parts.count == 2, let value = UInt64(parts[1]) else { continue }
            values[String(parts[0])] = value
        }
    }
}

/// The subset of `io.containerd.cgroups.v1.Metrics` the shim fills (containerd/cgroups
/// `stats/v1/metrics.proto`): pids, cpu, memory, OOM control.
public struct CgroupV1Metrics: Sendable, Hashable {
    public static let typeURL = "io.containerd.cgroups.v1.Metrics"

    public struct MemoryEntry: Sendable, Hashable {
        public var limit: UInt64 = 0, usage: UInt64 = 0, max: UInt64 = 0, failcnt: UInt64 = 0
        public init(limit: UInt64 = 0, usage: UInt64 = 0, max: UInt64 = 0, failcnt: UInt64 = 0) {
            self.limit = limit
            self.usage = usage
            self.max = max
            self.failcnt = failcnt
        }
        var encoded: [UInt8] {
            var w = ProtoWriter()
            w.uint(1, limit)
            w.uint(2, usage)
            w.uint(3, max)
            w.uint(4, failcnt)
            return w.bytes
        }
    }

    /// `memory.stat` keys in MemoryStat field order (1…32).
    public static let memoryStatFields = [
        "cache", "rss", "rss_huge", "mapped_file", "dirty", "writeback", "pgpgin", "pgpgout", "pgfault",
        "pgmajfault", "inactive_anon", "active_anon", "inactive_file", "active_file", "unevictable",
        "hierarchical_memory_limit", "hierarchical_memsw_limit", "total_cache", "total_rss", "total_rss_huge",
        "total_mapped_file", "total_dirty", "total_writeback", "total_pgpgin", "total_pgpgout", "total_pgfault",
        "total_pgmajfault", "total_inactive_anon", "total_active_anon", "total_inactive_file", "total_active_file",
        "total_unevictable",
    ]
    /// `memory.oom_control` keys in MemoryOomControl field order.
    public static let oomControlFields = ["oom_kill_disable", "under_oom", "oom_kill"]

    public var pids: (current: UInt64, limit: UInt64)?
    public var cpuUsage: (total: UInt64, kernel: UInt64, user: UInt64, perCPU: [UInt64])?
    public var cpuThrottling: (periods: UInt64, throttledPeriods: UInt64, throttledTime: UInt64)?
    public var memoryStat: KeyedCounters?
    public var memoryUsage: MemoryEntry?
    public var memorySwap: MemoryEntry?
    public var memoryKernel: MemoryEntry?
    public var memoryKernelTCP: MemoryEntry?
    public var oomControl: KeyedCounters?

    public init() {}

    public static func == (a: Self, b: Self) -> Bool { a.encoded() == b.encoded() }
    public func hash(into hasher: inout Hasher) { hasher.combine(encoded()) }

    public func encoded() -> [UInt8] {
        var w = ProtoWriter()
        if let pids {
            var p = ProtoWriter()
            p.uint(1, pids.current)
            p.uint(2, pids.limit)
            w.lengthDelimited(2, p.bytes)
        }
        if cpuUsage != nil || cpuThrottling != nil {
            var cpu = ProtoWriter()
            if let cpuUsage {
                var u = ProtoWriter()
                u.uint(1, cpuUsage.total)
                u.uint(2, cpuUsage.kernel)
                u.uint(3, cpuUsage.user)
                u.packed(4, cpuUsage.perCPU)
                cpu.lengthDelimited(1, u.bytes)
            }
            if let cpuThrottling {
                var t = ProtoWriter()
                t.uint(1, cpuThrottling.periods)
                t.uint(2, cpuThrottling.throttledPeriods)
                t.uint(3, cpuThrottling.throttledTime)
                cpu.lengthDelimited(2, t.bytes)
            }
            w.lengthDelimited(3, cpu.bytes)
        }
        if memoryStat != nil || memoryUsage != nil {
            var m = ProtoWriter()
            memoryStat?.encode(to: &m, fields: Self.memoryStatFields)
            if let memoryUsage { m.lengthDelimited(33, memoryUsage.encoded) }
            if let memorySwap { m.lengthDelimited(34, memorySwap.encoded) }
            if let memoryKernel { m.lengthDelimited(35, memoryKernel.encoded) }
            if let memoryKernelTCP { m.lengthDelimited(36, memoryKernelTCP.encoded) }
            w.lengthDelimited(4, m.bytes)
        }
        if let oomControl {
            var o = ProtoWriter()
            oomControl.encode(to: &o, fields: Self.oomControlFields)
            w.lengthDelimited(9, o.bytes)
        }
        return w.bytes
    }
}

/// The subset of `io.containerd.cgroups.v2.Metrics` the shim fills (containerd/cgroups
/// `v2/stats/metrics.proto`): pids, cpu, memory, memory events.
public struct CgroupV2Metrics: Sendable, Hashable {
    public static let typeURL = "io.containerd.cgroups.v2.Metrics"

    /// `cpu.stat` keys in CPUStat field order.
    public static let cpuStatFields = ["usage_usec", "user_usec", "system_usec", "nr_periods", "nr_throttled", "throttled_usec"]
    /// `memory.stat` keys in MemoryStat field order (1…31); 32-35 are usage, usage_limit,
    /// swap_usage, swap_limit.
    public static let memoryStatFields = [
        "anon", "file", "kernel_stack", "slab", "sock", "shmem", "file_mapped", "file_dirty", "file_writeback",
        "anon_thp", "inactive_anon", "active_anon", "inactive_file", "active_file", "unevictable",
        "slab_reclaimable", "slab_unreclaimable", "pgfault", "pgmajfault", "workingset_refault",
        "workingset_activate", "workingset_nodereclaim", "pgrefill", "pgscan", "pgsteal", "pgactivate",
        "pgdeactivate", "pglazyfree", "pglazyfreed", "thp_fault_alloc", "thp_collapse_alloc",
        "usage", "usage_limit", "swap_usage", "swap_limit",
    ]
    /// `memory.events` keys in MemoryEvents field order.
    public static let memoryEventsFields = ["low", "high", "max", "oom", "oom_kill"]

    public var pids: (current: UInt64, limit: UInt64)?
    public var cpu: KeyedCounters?
    /// `memory.stat` plus `usage`, `usage_limit`, `swap_usage`, `swap_limit`.
    public var memory: KeyedCounters?
    public var memoryEvents: KeyedCounters?

    public init() {}

    public static func == (a: Self, b: Self) -> Bool { a.encoded() == b.encoded() }
    public func hash(into hasher: inout Hasher) { hasher.combine(encoded()) }

    public func encoded() -> [UInt8] {
        var w = ProtoWriter()
        if let pids {
            var p = ProtoWriter()
            p.uint(1, pids.current)
            p.uint(2, pids.limit)
            w.lengthDelimited(1, p.bytes)
        }
        if let cpu {
            var c = ProtoWriter()
            cpu.encode(to: &c, fields: Self.cpuStatFields)
            w.lengthDelimited(2, c.bytes)
        }
        if let memory {
            var m = ProtoWriter()
            memory.encode(to: &m, fields: Self.memoryStatFields)
            w.lengthDelimited(4, m.bytes)
        }
        if let memoryEvents {
            var e = ProtoWriter()
            memoryEvents.encode(to: &e, fields: Self.memoryEventsFields)
            w.lengthDelimited(8, e.bytes)
        }
        return w.bytes
    }
}
