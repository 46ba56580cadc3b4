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
/// One thread (started with the first watch) polls every watched descriptor plus a wake-up pipe.
/// Descriptors are closed on that thread only, so `poll` never sees a closed or reused one.
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
        var containerID: String
        var target: Target
        var fd: Int32
        /// v2: the last `oom_kill` count seen.
        var oomKills: UInt64
    }

    private struct State {
        var watches: [String: Watch] = [:]
        /// Descriptors of removed watches, for the thread to close.
        var retired: [Int32] = []
        /// The wake-up pipe (read, write); created with the thread.
        var wake: (Int32, Int32)?
    }

    private let state = ConditionLock(State())
    private let onOOM: @Sendable (String) -> Void

    /// - Parameter onOOM: called with the container id on the watcher's thread.
    init(onOOM: @escaping @Sendable (String) -> Void) {
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
        do throws(BerthError) {
            let wake = try ensureThread()
            state.update { state in
                if let old = state.watches.removeValue(forKey: id) { state.retired.append(old.fd) }
                state.watches[id] = Watch(containerID: id, target: target, fd: fd, oomKills: oomKills)
            }
            Self.poke(wake)
        } catch {
            close(fd)
            throw error
        }
    }

    /// Stops watching container `id` (no-op when it is not watched).
    func remove(containerID id: String) {
        let wake = state.update { state -> (Int32, Int32)? in
            guard let old = state.watches.removeValue(forKey: id) else { return nil }
            state.retired.append(old.fd)
            return state.wake
        }
        if let wake { Self.poke(wake) }
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

    private func ensureThread() throws(BerthError) -> (Int32, Int32) {
        try state.update { (state: inout State) throws(BerthError) -> (Int32, Int32) in
            if let wake = state.wake { return wake }
            var fds: [Int32] = [-1, -1]
            guard pipe2(&fds, O_CLOEXEC | O_NONBLOCK) == 0 else { throw errnoError("oom watch: pipe") }
            let wake = (fds[0], fds[1])
            do throws(BerthError) {
                try startThread(name: "oom") { [self] in run(wakeFD: wake.0) }
            } catch {
                close(fds[0])
                close(fds[1])
                throw error
            }
            state.wake = wake
            return wake
        }
    }

    private static func poke(_ wake: (Int32, Int32)) {
        var byte: UInt8 = 1
        _ = write(wake.1, &byte, 1)
    }

    // MARK: The thread

    private func run(wakeFD: Int32) {
        var scratch = [UInt8](repeating: 0, count: 4096)
        while true {
            let (watches, retired) = state.update { state -> ([Watch], [Int32]) in
                let retired = state.retired
                state.retired.removeAll()
                return (Array(state.watches.values), retired)
            }
            for fd in retired { close(fd) }
            var fds = [pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]
            fds += watches.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
            if poll(&fds, nfds_t(fds.count), -1) < 0 {
                if errno == EINTR { continue }
                log("berth-shim: oom watch: poll: \(String(cString: strerror(errno)))")
                sleep(for: .seconds(1))
                continue
            }
            if fds[0].revents != 0 {
                while scratch.withUnsafeMutableBytes({ read(wakeFD, $0.baseAddress, $0.count) }) > 0 {}
            }
            for (index, watch) in watches.enumerated() where fds[index + 1].revents != 0 {
                // Drain the descriptor (eventfd counter or inotify events); both are non-blocking.
                while scratch.withUnsafeMutableBytes({ read(watch.fd, $0.baseAddress, $0.count) }) > 0 {}
                fired(watch)
            }
        }
    }

    /// A watched descriptor woke up: decide whether it was an OOM (on the watcher's thread).
    private func fired(_ watch: Watch) {
        switch watch.target {
        case .v1(let directory):
            guard access(directory + "/memory.oom_control", F_OK) == 0 else {
                // The cgroup was removed: the kernel's last signal, not an OOM.
                remove(containerID: watch.containerID, fd: watch.fd)
                return
            }
            if isCurrent(watch) { onOOM(watch.containerID) }
        case .v2(let directory):
            guard let text = readText(directory + "/memory.events") else {
                remove(containerID: watch.containerID, fd: watch.fd)
                return
            }
            let count = Self.oomKills(memoryEvents: text)
            let grew = state.update { state -> Bool in
                guard var current = state.watches[watch.containerID], current.fd == watch.fd else { return false }
                defer { state.watches[watch.containerID] = current }
                guard count > current.oomKills else { return false }
                current.oomKills = count
                return true
            }
            if grew { onOOM(watch.containerID) }
        }
    }

    private func isCurrent(_ watch: Watch) -> Bool {
        state.update { $0.watches[watch.containerID]?.fd == watch.fd }
    }

    /// Drops a watch whose cgroup is gone, unless it was replaced meanwhile.
    private func remove(containerID id: String, fd: Int32) {
        state.update { state in
            guard state.watches[id]?.fd == fd else { return }
            state.watches[id] = nil
            state.retired.append(fd)
        }
    }
}
