import Foundation

/// What a finished process left: its exit status and its output.
public struct CommandResult: Sendable, CustomStringConvertible {
    public let arguments: [String]
    public let status: Int32
    public let stdout: String
    public let stderr: String

    public var succeeded: Bool { status == 0 }
    public var description: String {
        "`\(arguments.joined(separator: " "))` exited \(status)\nstdout: \(stdout)\nstderr: \(stderr)"
    }
}

public enum TestSupportError: Error, CustomStringConvertible {
    case missingPrerequisite(String)
    case timeout(String)
    case failed(String)

    public var description: String {
        switch self {
        case .missingPrerequisite(let what): "missing prerequisite: \(what)"
        case .timeout(let what): "timed out: \(what)"
        case .failed(let what): what
        }
    }
}

/// Runs external programs for tests, with output captured through files (no pipe deadlocks)
/// and a hard timeout after which the process is killed by its PID.
public enum Command {
    @discardableResult
    public static func run(_ arguments: [String], stdinFile: String? = nil, environment: [String: String] = [:],
                           directory: String? = nil, timeout: Duration = .seconds(120)) throws -> CommandResult {
        let process = try start(arguments, stdinFile: stdinFile, environment: environment, directory: directory)
        return try process.wait(timeout: timeout)
    }

    /// Starts a program and returns at once; the caller waits or kills it.
    public static func start(_ arguments: [String], stdinFile: String? = nil, environment: [String: String] = [:],
                             directory: String? = nil) throws -> RunningCommand {
        guard let executable = arguments.first else { throw TestSupportError.failed("empty command") }
        let path = try which(executable)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("berth-cmd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let out = dir.appendingPathComponent("stdout")
        let err = dir.appendingPathComponent("stderr")
        FileManager.default.createFile(atPath: out.path, contents: nil)
        FileManager.default.createFile(atPath: err.path, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = Array(arguments.dropFirst())
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        var env = ProcessInfo.processInfo.environment
        for (key, value) in environment { env[key] = value }
        process.environment = env
        process.standardOutput = try FileHandle(forWritingTo: out)
        process.standardError = try FileHandle(forWritingTo: err)
        if let stdinFile {
            process.standardInput = FileHandle(forReadingAtPath: stdinFile)
        } else {
            process.standardInput = FileHandle.nullDevice
        }
        try process.run()
        return RunningCommand(arguments: arguments, process: process, directory: dir)
    }

    /// The absolute path of `name`, searched on PATH (and /usr/sbin, /sbin).
    public static func which(_ name: String) throws -> String {
        if name.contains("/") { return name }
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "") + ":/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin"
        for dir in path.split(separator: ":") {
            let candidate = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw TestSupportError.missingPrerequisite("\(name) is not installed (run scripts/install-deps)")
    }
}

/// A process started by ``Command/start(_:stdinFile:environment:)``.
public final class RunningCommand: @unchecked Sendable {
    public let arguments: [String]
    let process: Process
    let directory: URL

    init(arguments: [String], process: Process, directory: URL) {
        self.arguments = arguments
        self.process = process
        self.directory = directory
    }

    public var pid: Int32 { process.processIdentifier }
    public var isRunning: Bool { process.isRunning }

    public var stdoutSoFar: String { (try? String(contentsOf: directory.appendingPathComponent("stdout"), encoding: .utf8)) ?? "" }
    public var stderrSoFar: String { (try? String(contentsOf: directory.appendingPathComponent("stderr"), encoding: .utf8)) ?? "" }

    public func wait(timeout: Duration) throws -> CommandResult {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now > deadline {
                kill(pid, SIGKILL)
                process.waitUntilExit()
                throw TestSupportError.timeout("`\(arguments.joined(separator: " "))` after \(timeout)\nstderr: \(stderrSoFar)")
            }
            usleep(5_000)
        }
        process.waitUntilExit()
        let result = CommandResult(arguments: arguments, status: process.terminationStatus,
                                   stdout: stdoutSoFar, stderr: stderrSoFar)
        try? FileManager.default.removeItem(at: directory)
        return result
    }

    /// Sends `signal` to this process (by its PID), waits for it to end and removes its output.
    public func stop(signal: Int32 = SIGTERM, timeout: Duration = .seconds(20)) {
        defer { try? FileManager.default.removeItem(at: directory) }
        guard process.isRunning else { return }
        kill(pid, signal)
        let deadline = ContinuousClock.now + timeout
        while process.isRunning && ContinuousClock.now < deadline { usleep(5_000) }
        if process.isRunning { kill(pid, SIGKILL) }
        process.waitUntilExit()
    }
}
