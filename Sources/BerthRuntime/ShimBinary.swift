#if canImport(Glibc)
import Glibc
#endif
import BerthCore

/// Which shim binary serves a runtime name.
///
/// In order: the configured mapping; an absolute path as is; `io.containerd.runc.v2` and
/// `io.containerd.runc.v1` → `berth-shim` next to berthd, else on `PATH`; any other
/// `….X.vN` → `containerd-shim-X-vN` on `PATH` or next to berthd (containerd's rule).
public struct ShimResolver: Sendable {
    /// Runtime name → shim binary (an absolute path, or a name looked up on `PATH`).
    public var configured: [String: String]
    /// The directory of the berthd executable.
    public var daemonDirectory: String
    /// The search path (`PATH`).
    public var searchPath: [String]

    public static let berthShim = "berth-shim"
    /// Runtime names Berth's own shim serves by default.
    public static let runcRuntimes: Set<String> = ["io.containerd.runc.v2", "io.containerd.runc.v1"]

    public init(configured: [String: String], daemonDirectory: String, searchPath: [String]) {
        self.configured = configured
        self.daemonDirectory = daemonDirectory
        self.searchPath = searchPath
    }

    /// The shim binary's absolute path.
    ///
    /// - Throws: `notFound` when the runtime names no binary that exists and is executable;
    ///   `invalidArgument` for a runtime name containerd's rule cannot turn into a binary name.
    public func resolve(_ runtime: String) throws(BerthError) -> String {
        if let binary = configured[runtime] {
            guard let path = find(binary, nextToDaemon: false) else {
                throw .notFound("runtime \(quoted(runtime)) binary not installed \(quoted(binary)): file does not exist")
            }
            return path
        }
        if runtime.hasPrefix("/") {
            guard Self.isExecutable(runtime) else {
                throw .notFound("runtime \(quoted(runtime)): shim binary does not exist or is not executable")
            }
            return runtime
        }
        let name: String
        if Self.runcRuntimes.contains(runtime) {
            name = Self.berthShim
        } else {
            guard let binaryName = Self.binaryName(runtime) else {
                throw .invalidArgument("runtime \(quoted(runtime)): not a runtime name of the form io.containerd.<name>.<version>")
            }
            name = binaryName
        }
        guard let path = find(name, nextToDaemon: true) else {
            throw .notFound("runtime \(quoted(runtime)) binary not installed \(quoted(name)): file does not exist")
        }
        return path
    }

    /// containerd's rule: the last two dot-separated parts, `containerd-shim-<name>-<version>`.
    public static func binaryName(_ runtime: String) -> String? {
        let parts = runtime.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count >= 2, !parts[parts.count - 2].isEmpty, !parts[parts.count - 1].isEmpty,
              !runtime.contains("/") else { return nil }
        return "containerd-shim-\(parts[parts.count - 2])-\(parts[parts.count - 1])"
    }

    private func find(_ name: String, nextToDaemon: Bool) -> String? {
        if name.contains("/") { return Self.isExecutable(name) ? name : nil }
        var directories = nextToDaemon && name == Self.berthShim ? [daemonDirectory] : []
        directories += searchPath
        if nextToDaemon && name != Self.berthShim { directories.append(daemonDirectory) }
        for directory in directories where !directory.isEmpty {
            let candidate = "\(directory)/\(name)"
            if Self.isExecutable(candidate) { return candidate }
        }
        return nil
    }

    static func isExecutable(_ path: String) -> Bool {
        var status = stat()
        guard stat(path, &status) == 0, status.st_mode & S_IFMT == S_IFREG else { return false }
        return access(path, X_OK) == 0
    }
}
