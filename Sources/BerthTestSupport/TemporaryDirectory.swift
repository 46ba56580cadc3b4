import Foundation

/// A fresh, empty directory under the system temp directory for one test, removed with
/// everything in it when ``remove()`` runs.
///
/// Prefer ``withTemporaryDirectory(prefix:_:)``, which removes the directory even when the body
/// throws. An instance is not removed on `deinit`: Swift may end an object's lifetime at its last
/// use, which would delete the directory while a test still works in it.
public struct TemporaryDirectory: Sendable {
    public let path: String

    /// Makes the directory (`mkdtemp`, mode 0700). Throws if it cannot be made.
    public init(prefix: String = "berth-test") throws {
        let base = ProcessInfo.processInfo.environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        var template = Array("\(base)/\(prefix)-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw TemporaryDirectoryError(message: "mkdtemp in \(base): \(String(cString: strerror(errno)))")
        }
        path = String(cString: made)
    }

    /// `path/component`.
    public func appending(_ component: String) -> String { "\(path)/\(component)" }

    /// Removes the directory and everything in it; a directory already gone is not an error.
    public func remove() {
        // Committed blobs are read-only; make everything writable so the tree can be removed.
        if let enumerator = FileManager.default.enumerator(atPath: path) {
            for case let relative as String in enumerator {
                chmod("\(path)/\(relative)", 0o700)
            }
        }
        try? FileManager.default.removeItem(atPath: path)
    }
}

public struct TemporaryDirectoryError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// Runs `body` with a fresh temporary directory and removes it afterwards, whether or not the
/// body throws.
public func withTemporaryDirectory<T>(
    prefix: String = "berth-test", _ body: (TemporaryDirectory) async throws -> T
) async throws -> T {
    let directory = try TemporaryDirectory(prefix: prefix)
    defer { directory.remove() }
    return try await body(directory)
}

/// The synchronous form of ``withTemporaryDirectory(prefix:_:)``.
public func withTemporaryDirectory<T>(
    prefix: String = "berth-test", _ body: (TemporaryDirectory) throws -> T
) throws -> T {
    let directory = try TemporaryDirectory(prefix: prefix)
    defer { directory.remove() }
    return try body(directory)
}
