import BerthCore
import Glibc

/// Reads a container's cgroup counters into containerd's metrics messages.
public enum CgroupStats {
    /// The `Any` that `Stats` returns for the cgroup at `path` (the spec's cgroupsPath):
    /// `io.containerd.cgroups.v2.Metrics` on a unified hierarchy, `…v1.Metrics` otherwise.
    ///
    /// - Throws: `BerthError.notFound` "cgroup does not exist" when there is no such cgroup.
    public static func collect(cgroupsPath path: String, root: String = "/sys/fs/cgroup") throws(BerthError) -> ProtoAny {
        guard !path.isEmpty, !path.containsBytes(":") else { throw .notFound("cgroup does not exist: not found") }
        let relative = path.hasPrefix("/") ? path : "/" + path
        if access(root + "/cgroup.controllers", F_OK) == 0 {
            let directory = root + relative
            guard access(directory, F_OK) == 0 else { throw .notFound("cgroup does not exist: not found") }
            return ProtoAny(typeURL: CgroupV2Metrics.typeURL, value: v2(directory).encoded())
        }
        guard access(root + "/memory" + relative, F_OK) == 0 || access(root + "/pids" + relative, F_OK) == 0 else {
            throw .notFound("cgroup does not exist: not found")
        }
        return ProtoAny(typeURL: CgroupV1Metrics.typeURL, value: v1(root: root, path: relative).encoded())
    }

    static func number(_ path: String) -> UInt64? {
        guard let text = readText(path) else { return nil }
        let trimmed = text.split(whereSeparator: { $0 == "\n" || $0 == " " }).first.map(String.init) ?? ""
        if trimmed == "max" { return 0 }
        return UInt64(trimmed)
    }

    static func v1(root: String, path: String) -> CgroupV1Metrics {
        var metrics = CgroupV1Metrics()
        let pids = root + "/pids" + path
        if let current = number(pids + "/pids.current") {
            metrics.pids = (current, number(pids + "/pids.max") ?? 0)
        }
        let cpuacct = root + "/cpuacct" + path
        if let total = number(cpuacct + "/cpuacct.usage") {
            // cpuacct.stat counts USER_HZ ticks; containerd reports nanoseconds.
            let ticks = KeyedCounters(statFile: readText(cpuacct + "/cpuacct.stat") ?? "")
            let hz = UInt64(max(sysconf(Int32(_SC_CLK_TCK)), 1))
            let perCPU = (readText(cpuacct + "/cpuacct.usage_percpu") ?? "")
                .split(whereSeparator: { $0 == " " || $0 == "\n" }).compactMap { UInt64($0) }
            metrics.cpuUsage = (total, (ticks.values["system"] ?? 0) * 1_000_000_000 / hz,
                                (ticks.values["user"] ?? 0) * 1_000_000_000 / hz, perCPU)
        }
        if let text = readText(root + "/cpu" + path + "/cpu.stat") {
            let stat = KeyedCounters(statFile: text)
            metrics.cpuThrottling = (stat.values["nr_periods"] ?? 0, stat.values["nr_throttled"] ?? 0, stat.values["throttled_time"] ?? 0)
        }
        let memory = root + "/memory" + path
        if let text = readText(memory + "/memory.stat") {
            metrics.memoryStat = KeyedCounters(statFile: text)
            func entry(_ prefix: String) -> CgroupV1Metrics.MemoryEntry? {
                guard let usage = number(memory + "/\(prefix).usage_in_bytes") else { return nil }
                return .init(limit: number(memory + "/\(prefix).limit_in_bytes") ?? 0, usage: usage,
                             max: number(memory + "/\(prefix).max_usage_in_bytes") ?? 0,
                             failcnt: number(memory + "/\(prefix).failcnt") ?? 0)
            }
            metrics.memoryUsage = entry("memory")
            metrics.memorySwap = entry("memory.memsw")
            metrics.memoryKernel = entry("memory.kmem")
            metrics.memoryKernelTCP = entry("memory.kmem.tcp")
            if let oom = readText(memory + "/memory.oom_control") {
                metrics.oomControl = KeyedCounters(statFile: oom)
            }
        }
        return metrics
    }

    static func v2(_ directory: String) -> CgroupV2Metrics {
        var metrics = CgroupV2Metrics()
        if let current = number(directory + "/pids.current") {
            metrics.pids = (current, number(directory + "/pids.max") ?? 0)
        }
        if let text = readText(directory + "/cpu.stat") { metrics.cpu = KeyedCounters(statFile: text) }
        if let text = readText(directory + "/memory.stat") {
            var memory = KeyedCounters(statFile: text)
            memory.values["usage"] = number(directory + "/memory.current")
            memory.values["usage_limit"] = number(directory + "/memory.max")
            memory.values["swap_usage"] = number(directory + "/memory.swap.current")
            memory.values["swap_limit"] = number(directory + "/memory.swap.max")
            metrics.memory = memory
        }
        if let text = readText(directory + "/memory.events") { metrics.memoryEvents = KeyedCounters(statFile: text) }
        return metrics
    }
}
