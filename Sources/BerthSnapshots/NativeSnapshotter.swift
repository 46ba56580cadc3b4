import BerthArchive
import BerthCore
import BerthSystem

/// Snapshots as plain directory trees: each snapshot's `snapshots/<id>` is a full copy of its
/// parent, changed in place, presented as a bind mount. Works on any file system, at the cost
/// of a copy per snapshot; as containerd's native snapshotter.
public struct NativeSnapshotter: Snapshotter {
    public let name = "native"
    public let copiesOnCreate = true
    /// `<root>/snapshots/native`.
    public let root: String
    let layout: SnapshotDirectories

    public init(root: String) throws(BerthError) {
        self.root = root
        self.layout = SnapshotDirectories(root: root)
        try layout.prepare()
    }

    /// The directory holding snapshot `id`'s whole tree.
    public func treeDirectory(of id: Int64) -> String { layout.directory(of: id) }

    public func create(id: Int64, parents: [Int64], kind: SnapshotKind) throws(BerthError) {
        try layout.makeSnapshotDirectory(id)
        guard let parent = parents.first else { return }
        do {
            try FileTree.copy(from: treeDirectory(of: parent), to: treeDirectory(of: id))
        } catch {
            try? layout.removeSnapshotDirectory(id)
            throw error
        }
    }

    public func mounts(id: Int64, parents: [Int64], kind: SnapshotKind) -> [Mount] {
        [Mount(type: "bind", source: treeDirectory(of: id), options: [kind == .view ? "ro" : "rw", "rbind"])]
    }

    public func usage(id: Int64) throws(BerthError) -> SnapshotUsage {
        let (size, inodes) = try FileTree.usage(of: treeDirectory(of: id))
        return SnapshotUsage(size: size, inodes: inodes)
    }

    public func remove(id: Int64) throws(BerthError) {
        try layout.removeSnapshotDirectory(id)
    }

    public func storedIDs() throws(BerthError) -> [Int64] {
        layout.storedIDs()
    }
}
