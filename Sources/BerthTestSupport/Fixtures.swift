import Foundation

/// Where the repository and the binaries under test are.
public enum TestEnvironment {
    /// The repository root: `BERTH_REPO`, else found from this file's path.
    public static var repository: String {
        if let repo = ProcessInfo.processInfo.environment["BERTH_REPO"], !repo.isEmpty { return repo }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
    }

    /// The berthd binary: `BERTH_BERTHD`, else the debug build beside the tests.
    public static func berthd() throws -> String {
        if let path = ProcessInfo.processInfo.environment["BERTH_BERTHD"], !path.isEmpty { return path }
        for candidate in ["\(repository)/.build/debug/berthd", "\(repository)/.build/x86_64-unknown-linux-gnu/debug/berthd"]
        where FileManager.default.isExecutableFile(atPath: candidate) {
            return candidate
        }
        throw TestSupportError.missingPrerequisite("berthd binary (build it with `swift build` or set BERTH_BERTHD)")
    }

    /// Makes a fresh directory under /tmp (short paths keep unix sockets under 108 bytes).
    public static func makeTemporaryDirectory(_ prefix: String) throws -> String {
        var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
        guard let result = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw TestSupportError.failed("mkdtemp failed")
        }
        return String(cString: result)
    }
}

/// A berthd process on its own root, state and socket in a temp directory.
public final class DaemonProcess: @unchecked Sendable {
    public let directory: String
    public var root: String { "\(directory)/root" }
    public var state: String { "\(directory)/state" }
    public var socket: String { "\(directory)/berthd.sock" }
    public var logPath: String { "\(directory)/berthd.log" }
    public private(set) var process: RunningCommand?
    let makeArguments: @Sendable (DaemonProcess) throws -> [String]
    /// A log line that marks the daemon as settled after start-up, if it writes one.
    let settledLine: String?

    /// A berthd.
    public convenience init(extraArguments: [String] = []) throws {
        // berthd collects garbage once right after start; content a test writes without a lease
        // before that would be collected, as containerd would collect it too.
        try self.init(prefix: "berth-it", settledLine: "start-up garbage collection done") { daemon in
            [try TestEnvironment.berthd(), "--root", daemon.root, "--state", daemon.state, "--address", daemon.socket,
             "--log-level", "debug"] + extraArguments
        }
    }

    init(prefix: String, settledLine: String? = nil, arguments: @escaping @Sendable (DaemonProcess) throws -> [String]) throws {
        directory = try TestEnvironment.makeTemporaryDirectory(prefix)
        makeArguments = arguments
        self.settledLine = settledLine
    }

    /// Debian's containerd 1.6 on a temp root, for comparisons and interop; CRI and the
    /// snapshotters this host lacks are disabled.
    public static func containerd() throws -> DaemonProcess {
        let daemon = try DaemonProcess(prefix: "berth-ctd") { daemon in
            [try Command.which("containerd"), "--config", "\(daemon.directory)/config.toml", "--log-level", "info"]
        }
        let config = """
        version = 2
        root = "\(daemon.root)"
        state = "\(daemon.state)"
        disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                            "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
        [grpc]
          address = "\(daemon.socket)"
        [ttrpc]
          address = "\(daemon.socket).ttrpc"

        """
        try config.write(toFile: "\(daemon.directory)/config.toml", atomically: true, encoding: .utf8)
        return daemon
    }

    public var arguments: [String] { get throws { try makeArguments(self) } }

    /// Starts berthd and waits until `ctr version` answers.
    public func start(timeout: Duration = .seconds(30)) throws {
        if !FileManager.default.fileExists(atPath: logPath) {
            FileManager.default.createFile(atPath: logPath, contents: nil)
        }
        guard let logFile = FileHandle(forWritingAtPath: logPath) else { throw TestSupportError.failed("open \(logPath)") }
        logFile.seekToEndOfFile()
        let process = Process()
        let args = try arguments
        process.executableURL = URL(fileURLWithPath: args[0])
        process.arguments = Array(args.dropFirst())
        process.standardOutput = logFile
        process.standardError = logFile
        process.standardInput = FileHandle.nullDevice
        try process.run()
        self.process = RunningCommand(arguments: args, process: process, directory: URL(fileURLWithPath: directory).appendingPathComponent("unused"))
        let startsBefore = settledLine.map { fullLog.components(separatedBy: $0).count - 1 } ?? 0
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            guard process.isRunning else {
                throw TestSupportError.failed("berthd exited with \(process.terminationStatus) during start-up:\n\(log(tail: 30))")
            }
            if FileManager.default.fileExists(atPath: socket),
               let result = try? ctr(["version"], timeout: .seconds(5)), result.succeeded,
               settledLine.map({ line in log(tail: 1000).components(separatedBy: line).count > startsBefore + 1 }) ?? true {
                return
            }
            usleep(50_000)
        }
        throw TestSupportError.timeout("berthd did not answer on \(socket):\n\(log(tail: 30))")
    }

    /// Runs Debian's ctr against this daemon.
    @discardableResult
    public func ctr(_ arguments: [String], namespace: String? = nil, stdinFile: String? = nil,
                    timeout: Duration = .seconds(120)) throws -> CommandResult {
        var args = ["ctr", "--address", socket, "--connect-timeout", "5s"]
        if let namespace { args += ["--namespace", namespace] }
        return try Command.run(args + arguments, stdinFile: stdinFile, timeout: timeout)
    }

    /// Runs ctr and fails unless it succeeds; returns its stdout.
    @discardableResult
    public func ctrOK(_ arguments: [String], namespace: String? = nil, stdinFile: String? = nil,
                      timeout: Duration = .seconds(120)) throws -> String {
        let result = try ctr(arguments, namespace: namespace, stdinFile: stdinFile, timeout: timeout)
        guard result.succeeded else { throw TestSupportError.failed("\(result)\nberthd log:\n\(log(tail: 20))") }
        return result.stdout
    }

    public func log(tail lines: Int = 50) -> String {
        let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        return text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
    }

    public var fullLog: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// SIGTERM and wait: a graceful shutdown.
    public func stop() { process?.stop(signal: SIGTERM) }

    /// SIGKILL: a crash.
    public func crash() { process?.stop(signal: SIGKILL) }

    /// Stops the daemon, unmounts whatever a test left mounted under its directory, and removes
    /// the directory (never through a mount point).
    public func cleanUp() {
        stop()
        unmountAll(under: directory)
        guard mountPoints(under: directory).isEmpty else { return }
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// Mount points at or below `directory`, deepest first, from /proc/self/mountinfo.
public func mountPoints(under directory: String) -> [String] {
    guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return [] }
    let prefix = directory.hasSuffix("/") ? directory : directory + "/"
    return text.split(separator: "\n").compactMap { line -> String? in
        let fields = line.split(separator: " ")
        guard fields.count > 4 else { return nil }
        // Octal escapes (\040 for a space) are left as they are: test paths have none.
        let point = String(fields[4])
        return point == directory || point.hasPrefix(prefix) ? point : nil
    }.sorted { $0.count > $1.count }
}

/// Lazily unmounts every mount point at or below `directory`.
public func unmountAll(under directory: String) {
    for point in mountPoints(under: directory) {
        _ = umount2(point, Int32(MNT_DETACH))
    }
}

/// Runs `body` with a started berthd that is stopped and removed afterwards, even on failure.
public func withDaemon<T>(extraArguments: [String] = [], _ body: (DaemonProcess) async throws -> T) async throws -> T {
    let daemon = try DaemonProcess(extraArguments: extraArguments)
    defer { daemon.cleanUp() }
    try daemon.start()
    return try await body(daemon)
}

/// A `docker-registry` serving plain HTTP on a free loopback port.
public final class LocalRegistry: @unchecked Sendable {
    public let directory: String
    public let port: Int
    public var host: String { "127.0.0.1:\(port)" }
    let process: RunningCommand

    public init() throws {
        directory = try TestEnvironment.makeTemporaryDirectory("berth-reg")
        port = try freePort()
        let config = """
        version: 0.1
        log:
          level: error
        storage:
          filesystem:
            rootdirectory: \(directory)/data
          delete:
            enabled: true
        http:
          addr: 127.0.0.1:\(port)

        """
        try config.write(toFile: "\(directory)/config.yml", atomically: true, encoding: .utf8)
        process = try Command.start(["docker-registry", "serve", "\(directory)/config.yml"])
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            if let r = try? Command.run(["curl", "-sf", "-o", "/dev/null", "http://\(host)/v2/"], timeout: .seconds(5)), r.succeeded {
                return
            }
            guard process.isRunning else { throw TestSupportError.failed("docker-registry exited: \(process.stderrSoFar)") }
            usleep(50_000)
        }
        process.stop(signal: SIGKILL)
        throw TestSupportError.timeout("docker-registry on \(host)")
    }

    /// Pushes every image of an OCI layout made by scripts/make-test-images.
    public func push(_ images: TestImages) throws {
        let result = try Command.run(["\(TestEnvironment.repository)/scripts/make-test-images", "--push", images.directory, host],
                                     timeout: .seconds(300))
        guard result.succeeded else { throw TestSupportError.failed("push: \(result)") }
    }

    public func stop() {
        process.stop(signal: SIGTERM)
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// Test images built by scripts/make-test-images (busybox-static packed with umoci).
public struct TestImages: Sendable {
    public let directory: String
    public var ociArchive: String { "\(directory)/busybox-oci.tar" }
    public var dockerArchive: String { "\(directory)/busybox-docker.tar" }
    public var bigArchive: String { "\(directory)/big-oci.tar" }

    /// Builds the images into a fresh directory; `bigMegabytes` adds the `big:1` image,
    /// `variants` the zstd, uncompressed, multi-platform and 130-layer images.
    public static func build(bigMegabytes: Int? = nil, variants: Bool = false) throws -> TestImages {
        let directory = try TestEnvironment.makeTemporaryDirectory("berth-img")
        let script = "\(TestEnvironment.repository)/scripts/make-test-images"
        var runs = [[script, directory]]
        if let bigMegabytes { runs.append([script, "--big", directory, String(bigMegabytes)]) }
        if variants { runs.append([script, "--variants", directory]) }
        for arguments in runs {
            let result = try Command.run(arguments, timeout: .seconds(600))
            guard result.succeeded else { throw TestSupportError.failed("make-test-images: \(result)") }
        }
        return TestImages(directory: directory)
    }

    public func remove() { try? FileManager.default.removeItem(atPath: directory) }
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
public func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw TestSupportError.failed("socket") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0 else { throw TestSupportError.failed("bind") }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}
