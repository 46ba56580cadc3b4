import BerthCore
import BerthSystem
import BerthTTRPC
import CBerthSystem
import Glibc

/// Reports when the kernel's OOM killer strikes inside a container's memory cgroup, so the shim
/// can publish `/tasks/oom` (containerd's runc shim does the same with its epoller).
///
/// - cgroup v1: an eventfd registered on the cgroup's `memory.oom_control` through
///   `cgroup.event_control`. The kernel signals it on every OOM in the cgroup, and once more when
///   the cgroup is removed; a wake-up after the cgroup has gone is not an OOM.
/// - cgroup v2: inotify on the cgroup's `memory.events`; an OOM is reported when its `oom_kill`
///   counter has grown since the last look.
///
/// The descriptors are read on ``PollThread/shared`` (the thread that also reads the shim's
/// ttrpc client connection). A watch's descriptor is closed by whoever takes the watch out of the
/// table: ``remove(containerID:)`` through `unwatch`, or the poll thread when the cgroup has gone.
/// Containers are watched from Create (the cgroup exists once `runc create` returns, before the
/// process runs) until Delete.
final class OOMWatcher: Sendable {
    /// What is watched for one container.
    enum Target: Sendable, Hashable {
        /// cgroup v1: the memory cgroup directory.
        case v1(directory: String)
        /// cgroup v2: the cgroup directory (with `memory.events`).
        case v2(directory: String)
    }

    private struct Watch {
        var target: Target
        var fd: Int32
        /// v2: the last `oom_kill` count seen.
        var oomKills: UInt64
    }

    /// Watches by container id.
    private let watches = ConditionLock<[String: Watch]>([:])
    private let poller: PollThread
    private let onOOM: @Sendable (String) -> Void

    /// - Parameter onOOM: called with the container id on the poll thread.
    init(poller: PollThread = .shared, onOOM: @escaping @Sendable (String) -> Void) {
        self.poller = poller
        self.onOOM = onOOM
    }

    // MARK: Finding the cgroup

    /// The memory cgroup of process `pid`, from `/proc/<pid>/cgroup`: the v2 cgroup when
    /// `root` is a unified hierarchy, else the v1 `memory` hierarchy's.
    static func target(pid: Int32, root: String = "/sys/fs/cgroup") -> Target? {
        guard let text = readText("/proc/" + decimal(Int64(pid)) + "/cgroup") else { return nil }
        return target(procCgroup: text, unified: access(root + "/cgroup.controllers", F_OK) == 0, root: root)
    }

    /// Parses `/proc/<pid>/cgroup` (`hierarchy-id:controllers:path` per line).
    static func target(procCgroup text: String, unified: Bool, root: String = "/sys/fs/cgroup") -> Target? {
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3 else { continue }
            let path = String(fields[2])
            if unified {
                if fields[0] == "0" && fields[1].isEmpty { return .v2(directory: root + (path == "/" ? "" : path)) }
            } else if fields[1].split(separator: ",").contains("memory") {
                return .v1(directory: root + "/memory" + (path == "/" ? "" : path))
            }
        }
        return nil
    }

    /// The `oom_kill` counter of a `memory.events` file's text.
    static func oomKills(memoryEvents text: String) -> UInt64 {
        KeyedCounters(statFile: text).values["oom_kill"] ?? 0
    }

    // MARK: Watching

    /// Starts watching container `id`'s memory cgroup.
    ///
    /// - Throws: `BerthError` when the cgroup cannot be watched (the caller logs it; a container
    ///   runs without OOM events then, as with containerd).
    func add(containerID id: String, target: Target) throws(BerthError) {
        let fd: Int32
        var oomKills: UInt64 = 0
        switch target {
        case .v1(let directory):
            fd = try Self.registerEventFD(directory)
        case .v2(let directory):
            let events = directory + "/memory.events"
            fd = cberth_inotify_init()
            guard fd >= 0 else { throw errnoError("oom watch: inotify_init1") }
            guard cberth_inotify_watch_modify(fd, events) >= 0 else {
                let error = errnoError("oom watch: inotify_add_watch \(events)")
                close(fd)
                throw error
            }
            oomKills = readText(events).map(Self.oomKills(memoryEvents:)) ?? 0
        }
        let replaced = watches.update { watches -> Watch? in
            defer { watches[id] = Watch(target: target, fd: fd, oomKills: oomKills) }
            return watches[id]
        }
        if let replaced { poller.unwatch(replaced.fd) { close(replaced.fd) } }
        do {
            try poller.watch(fd) { [self] fd in fired(containerID: id, fd: fd) }
        } catch {
            watches.update { watches in
                if watches[id]?.fd == fd { watches[id] = nil }
            }
            close(fd)
            throw error
        }
    }

    /// Stops watching container `id` (no-op when it is not watched).
    func remove(containerID id: String) {
        guard let old = watches.update({ $0.removeValue(forKey: id) }) else { return }
        poller.unwatch(old.fd) { close(old.fd) }
    }

    /// cgroup v1: `<eventfd> <fd of memory.oom_control>` written to `cgroup.event_control`.
    private static func registerEventFD(_ directory: String) throws(BerthError) -> Int32 {
        let control = open(directory + "/memory.oom_control", O_RDONLY | O_CLOEXEC)
        guard control >= 0 else { throw errnoError("oom watch: open \(directory)/memory.oom_control") }
        defer { close(control) }
        let eventFD = cberth_eventfd()
        guard eventFD >= 0 else { throw errnoError("oom watch: eventfd") }
        let register = open(directory + "/cgroup.event_control", O_WRONLY | O_CLOEXEC)
        guard register >= 0 else {
            let error = errnoError("oom watch: open \(directory)/cgroup.event_control")
            close(eventFD)
            throw error
        }
        defer { close(register) }
        let line = Array((decimal(Int64(eventFD)) + " " + decimal(Int64(control))).utf8)
        guard line.withUnsafeBytes({ writeAll(register, $0) }) else {
            let error = errnoError("oom watch: write \(directory)/cgroup.event_control")
            close(eventFD)
            throw error
        }
        return eventFD
    }

    // MARK: On the poll thread

    /// A watched descriptor woke up: drain it and decide whether it was an OOM.
    private func fired(containerID id: String, fd: Int32) -> PollThread.Next {
        // The eventfd counter or the inotify events; both descriptors are non-blocking.
        withUnsafeTemporaryAllocation(byteCount: 4096, alignment: 8) { buffer in
            while read(fd, buffer.baseAddress, buffer.count) > 0 {}
        }
        // A watch removed or replaced meanwhile: its unwatch closes the descriptor.
        guard let watch = watches.update({ $0[id] }), watch.fd == fd else { return .keep }
        switch watch.target {
        case .v1(let directory):
            // The cgroup was removed: the kernel's last signal, not an OOM.
            guard access(directory + "/memory.oom_control", F_OK) == 0 else { return dropGone(containerID: id, fd: fd) }
            onOOM(id)
        case .v2(let directory):
            guard let text = readText(directory + "/memory.events") else { return dropGone(containerID: id, fd: fd) }
            let count = Self.oomKills(memoryEvents: text)
            let grew = watches.update { watches -> Bool in
                guard var current = watches[id], current.fd == fd, count > current.oomKills else { return false }
                current.oomKills = count
                watches[id] = current
                return true
            }
            if grew { onOOM(id) }
        }
        return .keep
    }

    /// Drops a watch whose cgroup is gone, unless it was removed or replaced meanwhile.
    private func dropGone(containerID id: String, fd: Int32) -> PollThread.Next {
        let owned = watches.update { watches -> Bool in
            guard watches[id]?.fd == fd else { return false }
            watches[id] = nil
            return true
        }
        return owned ? .stop { close(fd) } : .keep
    }
}
