import BerthCore
import CBerthSystem
import Glibc

/// How a child process is started with `posix_spawn`: its arguments and which descriptors become
/// its stdio (and any further numbered descriptors). Every descriptor the shim opens is
/// close-on-exec, so the child gets exactly these and nothing else.
public struct SpawnSpec: Sendable {
    /// The program; looked up on PATH unless it contains a slash.
    public var executable: String
    /// argv, argv[0] included.
    public var arguments: [String]
    /// Descriptors for the child's 0, 1 and 2; nil means /dev/null.
    public var stdin: Int32?
    public var stdout: Int32?
    public var stderr: Int32?
    /// Further descriptors: (source in this process, number in the child).
    public var extraDescriptors: [(source: Int32, target: Int32)] = []
    /// Extra environment entries (`KEY=value`) on top of this process's environment.
    public var extraEnvironment: [String] = []
    /// When set, the child runs in a private mount namespace of its own without the mount at
    /// this path (see ``HybridCgroups``).
    public var hiddenMount: String?

    public init(executable: String, arguments: [String]) {
        self.executable = executable
        self.arguments = arguments
    }
}

public enum Spawner {
    /// Starts the process with default signal dispositions and an empty signal mask (the shim
    /// blocks SIGCHLD and ignores SIGPIPE; children must not inherit that).
    ///
    /// - Throws: `BerthError.notFound` when the executable does not exist, `internal` otherwise.
    public static func spawn(_ spec: SpawnSpec) throws(BerthError) -> pid_t {
        let (pid, failure) = try launch(spec)
        if let failure {
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            throw failure
        }
        return pid
    }

    /// ``spawn(_:)`` for a caller that reaps: a child that was forked but failed before its
    /// program ran (only with `hiddenMount`) comes back as its pid with the failure.
    static func launch(_ spec: SpawnSpec) throws(BerthError) -> (pid: pid_t, failure: BerthError?) {
        if let hidden = spec.hiddenMount { return try launchWithPrivateMounts(spec, hiding: hidden) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }

        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        posix_spawnattr_setsigmask(&attributes, &emptyMask)
        var defaults = sigset_t()
        sigfillset(&defaults)
        sigdelset(&defaults, SIGKILL)
        sigdelset(&defaults, SIGSTOP)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        return try withChildDescriptors(spec) { (pairs) throws(BerthError) in
            for (source, target) in pairs { posix_spawn_file_actions_adddup2(&actions, source, target) }
            let (argv, envp) = spec.cArguments()
            defer { for pointer in argv + envp { free(pointer) } }
            var pid: pid_t = 0
            let rc = spec.executable.utf8.contains(UInt8(ascii: "/"))
                ? posix_spawn(&pid, spec.executable, &actions, &attributes, argv, envp)
                : posix_spawnp(&pid, spec.executable, &actions, &attributes, argv, envp)
            guard rc == 0 else { throw spec.failure(errno: rc) }
            return (pid, nil)
        }
    }

    private static func launchWithPrivateMounts(_ spec: SpawnSpec, hiding hidden: String) throws(BerthError) -> (pid: pid_t, failure: BerthError?) {
        guard let path = spec.resolvedExecutable else { throw spec.failure(errno: ENOENT) }
        return try withChildDescriptors(spec) { (pairs) throws(BerthError) in
            let dups = pairs.flatMap { [$0.source, $0.target] }
            let (argv, envp) = spec.cArguments()
            defer { for pointer in argv + envp { free(pointer) } }
            var childErrno: Int32 = 0
            let pid = cberth_spawn_private_mounts(path, argv, envp, dups, Int32(pairs.count), hidden, &childErrno)
            guard pid > 0 else { throw spec.failure(errno: errno) }
            return (pid, childErrno == 0 ? nil : spec.failure(errno: childErrno))
        }
    }

    /// Runs `body` with the child's descriptors as (source, target) pairs, to be dup2'd in order:
    /// stdin, stdout, stderr (nil is /dev/null), then `extraDescriptors`. Stdio sources may be
    /// 0-2 themselves in a daemon whose stdio is /dev/null, and dup2 onto the same number keeps
    /// close-on-exec, so low sources are copied up first; the copies and /dev/null stay open
    /// while `body` runs.
    private static func withChildDescriptors<R>(
        _ spec: SpawnSpec, _ body: ([(source: Int32, target: Int32)]) throws(BerthError) -> R
    ) throws(BerthError) -> R {
        let null = open("/dev/null", O_RDWR | O_CLOEXEC)
        guard null >= 0 else { throw errnoError("open /dev/null") }
        defer { close(null) }
        var temporaries: [Int32] = []
        defer { for fd in temporaries { close(fd) } }
        func movedHigh(_ fd: Int32) -> Int32 {
            guard fd < 3 else { return fd }
            let copy = fcntl(fd, F_DUPFD_CLOEXEC, 3)
            if copy >= 0 { temporaries.append(copy) }
            return copy
        }
        var pairs: [(source: Int32, target: Int32)] = []
        for (index, source) in [spec.stdin, spec.stdout, spec.stderr].enumerated() {
            pairs.append((movedHigh(source ?? null), Int32(index)))
        }
        for (source, target) in spec.extraDescriptors { pairs.append((movedHigh(source), target)) }
        return try body(pairs)
    }
}

extension SpawnSpec {
    /// argv and envp (this process's environment plus `extraEnvironment`) as nil-terminated C
    /// arrays of `strdup`ed strings, which the caller frees.
    func cArguments() -> (argv: [UnsafeMutablePointer<CChar>?], envp: [UnsafeMutablePointer<CChar>?]) {
        var environment: [String] = []
        var entry = environ
        while let pointer = entry.pointee {
            environment.append(String(cString: pointer))
            entry += 1
        }
        environment += extraEnvironment
        return (arguments.map { strdup($0) } + [nil], environment.map { strdup($0) } + [nil])
    }

    /// `executable` as a path: itself when it holds a slash, else the first executable match on PATH.
    var resolvedExecutable: String? {
        if executable.utf8.contains(UInt8(ascii: "/")) { return executable }
        let path = getenv("PATH").map { String(cString: $0) } ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        for directory in path.split(separator: ":") where !directory.isEmpty {
            let candidate = directory + "/" + executable
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    /// What a spawn that failed with `code` reports.
    func failure(errno code: Int32) -> BerthError {
        if code == ENOENT {
            // Go's exec words the two cases so; containerd's shim relays them.
            return .notFound(executable.utf8.contains(UInt8(ascii: "/"))
                ? "fork/exec \(executable): no such file or directory"
                : "exec: \(JSONValue.quote(executable)): executable file not found in $PATH")
        }
        return errnoError("spawn \(executable)", errno: code)
    }
}

/// A `BerthError.internal` with the errno text.
func errnoError(_ action: String, errno code: Int32 = errno) -> BerthError {
    .internal("\(action): \(String(cString: strerror(code)))")
}

/// Writes all of `bytes` to `fd`, retrying on EINTR and short writes.
@discardableResult
func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
    var offset = 0
    while offset < bytes.count {
        let n = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
        if n < 0 {
            if errno == EINTR { continue }
            return false
        }
        offset += n
    }
    return true
}

/// Reads `fd` to end of file.
func readAll(_ fd: Int32) -> [UInt8] {
    var out: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 16384)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR { continue }
            break
        }
        if n == 0 { break }
        out.append(contentsOf: buffer[0..<n])
    }
    return out
}

/// Reads a whole file, or nil when it cannot be opened.
func readFile(_ path: String) -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    return readAll(fd)
}

func readText(_ path: String) -> String? {
    readFile(path).map { String(decoding: $0, as: UTF8.self) }
}

/// Writes a file (truncating) with `mode`.
func writeFile(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644) throws(BerthError) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
    guard fd >= 0 else { throw errnoError("open \(path)") }
    defer { close(fd) }
    let ok = bytes.withUnsafeBytes { writeAll(fd, $0) }
    guard ok else { throw errnoError("write \(path)") }
}

/// Writes a file through a temporary name and rename, so readers see old or new content only.
func writeFileAtomically(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644) throws(BerthError) {
    let slash = path.lastIndex(of: "/")
    let directory = slash.map { String(path[..<$0]) } ?? "."
    let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
    let temporary = "\(directory)/.\(name)"
    try writeFile(temporary, bytes, mode: mode)
    guard rename(temporary, path) == 0 else { throw errnoError("rename \(temporary) to \(path)") }
}

/// Marks every open descriptor from 3 up close-on-exec, so whatever the shim inherited (Go's
/// exec passes on any descriptor its parent left inheritable) never reaches runc or a container.
public func markInheritedDescriptorsCloseOnExec() {
    guard let directory = opendir("/proc/self/fd") else { return }
    let own = dirfd(directory)
    var descriptors: [Int32] = []
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        if let fd = Int32(name), fd >= 3, fd != own { descriptors.append(fd) }
    }
    closedir(directory)
    for fd in descriptors {
        let flags = fcntl(fd, F_GETFD)
        if flags >= 0 { _ = fcntl(fd, F_SETFD, flags | FD_CLOEXEC) }
    }
}
