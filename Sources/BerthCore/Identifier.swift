/// Identifiers for namespaces, containers, leases and the like, validated the way containerd
/// does: alphanumerics separated by single `.`, `_` or `-`, at most 76 characters.
public enum Identifier {
    public static let maxLength = 76

    /// Throws `invalidArgument` naming `field` when `value` is not a valid identifier.
    public static func validate(_ value: String, field: String) throws(BerthError) {
        guard !value.isEmpty else {
            throw .invalidArgument("\(field): identifier must not be empty")
        }
        guard value.utf8.count <= maxLength else {
            throw .invalidArgument("\(field) \(quoted(value)): identifier longer than \(maxLength) characters")
        }
        var previousWasSeparator = true  // a separator may not lead
        for byte in value.utf8 {
            let isAlnum = (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
            if isAlnum {
                previousWasSeparator = false
            } else if byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-") {
                if previousWasSeparator {
                    throw .invalidArgument("\(field) \(quoted(value)): identifier must match [A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*")
                }
                previousWasSeparator = true
            } else {
                throw .invalidArgument("\(field) \(quoted(value)): identifier must match [A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*")
            }
        }
        if previousWasSeparator {
            throw .invalidArgument("\(field) \(quoted(value)): identifier must match [A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*")
        }
    }
}

/// A containerd namespace name: every stored object lives in exactly one.
public struct Namespace: Hashable, Sendable, CustomStringConvertible, Comparable {
    public let name: String

    public init(_ name: String) throws(BerthError) {
        try Identifier.validate(name, field: "namespace")
        self.name = name
    }

    /// For names already validated (e.g. read back from the database).
    public init(trusted name: String) { self.name = name }

    public static let `default` = Namespace(trusted: "default")
    public var description: String { name }
    public static func < (a: Namespace, b: Namespace) -> Bool { a.name < b.name }
}

/// Label rules shared by every labelled object.
public enum Labels {
    /// containerd refuses a label whose key and value together exceed 4096 bytes.
    public static let maxSize = 4096

    public static func validate(_ labels: [String: String]) throws(BerthError) {
        for (key, value) in labels {
            guard !key.isEmpty else { throw .invalidArgument("label key must not be empty") }
            if key.utf8.count + value.utf8.count > maxSize {
                throw .invalidArgument("label key and value length (\(key.utf8.count + value.utf8.count) bytes) greater than maximum size (\(maxSize) bytes), key: \(key.prefix(64))")
            }
        }
    }

    // Wire names of the labels garbage collection follows.
    public static let gcRoot = "containerd.io/gc.root"
    public static let gcExpire = "containerd.io/gc.expire"
    public static let gcFlat = "containerd.io/gc.flat"
    public static let gcRefContentPrefix = "containerd.io/gc.ref.content"
    public static let gcRefSnapshotPrefix = "containerd.io/gc.ref.snapshot."
    public static let uncompressed = "containerd.io/uncompressed"
    public static let distributionSourcePrefix = "containerd.io/distribution.source."
}
