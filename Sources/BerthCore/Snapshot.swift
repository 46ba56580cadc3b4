/// What a snapshot is for, as containerd's snapshotters distinguish them.
public enum SnapshotKind: String, Sendable, Codable, CaseIterable {
    /// A read-only view of a committed snapshot; never committed itself.
    case view
    /// A writable snapshot, committed later into an immutable one.
    case active
    /// Immutable; the parent of other snapshots.
    case committed
}

/// A snapshot as one namespace sees it: `name` is the key of an active snapshot or view, or
/// the name of a committed one. `parent` is the name of its committed parent ("" for none).
public struct SnapshotInfo: Sendable, Equatable, Filterable {
    public var name: String
    public var parent: String
    public var kind: SnapshotKind
    public var labels: [String: String]
    public var createdAt: Timestamp
    public var updatedAt: Timestamp

    public init(name: String, parent: String = "", kind: SnapshotKind, labels: [String: String] = [:],
                createdAt: Timestamp = .now, updatedAt: Timestamp = .now) {
        self.name = name
        self.parent = parent
        self.kind = kind
        self.labels = labels
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }

    /// containerd's snapshot filter fields: `kind`, `name`, `parent`, `labels.<key>`.
    public func field(_ path: [String]) -> String? {
        guard let first = path.first else { return nil }
        switch first {
        case "kind": return kind.rawValue
        case "name": return name
        case "parent": return parent
        case "labels": return Self.label(path.dropFirst(), in: labels)
        default: return nil
        }
    }
}

/// Disk usage of a snapshot's own layer: bytes of the blocks its files use and the number of
/// distinct inodes, as containerd reports them.
public struct SnapshotUsage: Sendable, Equatable {
    public var size: Int64
    public var inodes: Int64

    public init(size: Int64 = 0, inodes: Int64 = 0) {
        self.size = size
        self.inodes = inodes
    }
}

/// A mount a client can perform: `mount -t TYPE -o OPTIONS SOURCE TARGET`.
public struct Mount: Sendable, Equatable, Codable {
    public var type: String
    public var source: String
    public var target: String
    public var options: [String]

    public init(type: String, source: String, target: String = "", options: [String] = []) {
        self.type = type
        self.source = source
        self.target = target
        self.options = options
    }

    /// The value of an option `NAME=VALUE`, if present.
    public func option(_ name: String) -> String? {
        let prefix = name + "="
        return options.last { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) }
    }

    /// Whether the mount is read-only (`ro` among its options).
    public var isReadOnly: Bool { options.contains("ro") }
}

/// The storage half of a snapshotter: directories and mounts for numbered snapshots.
///
/// Names, parents, labels, namespaces and crash safety live in the metadata store, which gives
/// every snapshot an id before asking the storage for it; an implementation only keeps files.
/// Its methods block (file system work) and are called off the cooperative pool.
public protocol Snapshotter: Sendable {
    /// The name clients use (`overlayfs`, `native`).
    var name: String { get }

    /// Creates the storage of snapshot `id` as a child of `parents` (nearest first, all
    /// committed). Throws `internal` or `resourceExhausted` when the file system refuses.
    func create(id: Int64, parents: [Int64], kind: SnapshotKind) throws(BerthError)

    /// The mounts that present snapshot `id` with its parents (nearest first).
    func mounts(id: Int64, parents: [Int64], kind: SnapshotKind) -> [Mount]

    /// The usage of the snapshot's own layer (for native snapshots, the whole tree).
    func usage(id: Int64) throws(BerthError) -> SnapshotUsage

    /// Removes the storage of snapshot `id`; a missing one is not an error. Quick: the files
    /// may go after it returns.
    func remove(id: Int64) throws(BerthError)

    /// The ids that have storage on disk, for cleaning up after a crash.
    func storedIDs() throws(BerthError) -> [Int64]

    /// Whether ``create(id:parents:kind:)`` copies its parents' files, and so may take long,
    /// rather than making a few directories.
    var copiesOnCreate: Bool { get }
}

extension Snapshotter {
    public var copiesOnCreate: Bool { false }
}
