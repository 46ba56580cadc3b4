import BerthArchive
import BerthCore
import BerthSystem
import Glibc

/// Snapshots as overlayfs layers: each snapshot owns `snapshots/<id>/fs` (its layer, the
/// upper directory while active) and `snapshots/<id>/work` (overlayfs's work directory).
///
/// Mounts follow containerd's overlayfs snapshotter, so clients mount them the same way:
/// - no parents: a bind mount of `fs` (`rw` for an active snapshot, `ro` for a view);
/// - a view of one parent: a read-only bind mount of the parent's `fs`;
/// - otherwise an `overlay` mount with `lowerdir` = the parents' `fs` (nearest first) and, for
///   an active snapshot, `upperdir` and `workdir`. `index=off` comes first when the kernel has
///   the option, so a layer can be mounted in several places at once.
public struct OverlaySnapshotter: Snapshotter {
    public let name = "overlayfs"
    /// `<root>/snapshots/overlayfs`.
    public let root: String
    let layout: SnapshotDirectories
    let baseOptions: [String]

    public init(root: String) throws(BerthError) {
        self.root = root
        self.layout = SnapshotDirectories(root: root)
        try layout.prepare()
        baseOptions = FileSystem.exists("/sys/module/overlay/parameters/index") ? ["index=off"] : []
    }

    /// The directory holding snapshot `id`'s own layer.
    public func layerDirectory(of id: Int64) -> String { layout.directory(of: id) + "/fs" }

    public func create(id: Int64, parents: [Int64], kind: SnapshotKind) throws(BerthError) {
        let directory = layout.directory(of: id)
        try layout.makeSnapshotDirectory(id)
        do {
            try FileSystem.makeDirectory(directory + "/fs", mode: 0o755)
            if kind == .active { try FileSystem.makeDirectory(directory + "/work", mode: 0o711) }
        } catch {
            try? FileTree.removeTree(directory)
            throw error
        }
    }

    public func mounts(id: Int64, parents: [Int64], kind: SnapshotKind) -> [Mount] {
        if parents.isEmpty {
            return [Mount(type: "bind", source: layerDirectory(of: id), options: [kind == .view ? "ro" : "rw", "rbind"])]
        }
        var options = baseOptions
        if kind == .active {
            options.append("workdir=\(layout.directory(of: id))/work")
            options.append("upperdir=\(layerDirectory(of: id))")
        } else if parents.count == 1 {
            return [Mount(type: "bind", source: layerDirectory(of: parents[0]), options: ["ro", "rbind"])]
        }
        options.append("lowerdir=" + parents.map(layerDirectory(of:)).joined(separator: ":"))
        return [Mount(type: "overlay", source: "overlay", options: options)]
    }

    public func usage(id: Int64) throws(BerthError) -> SnapshotUsage {
        let (size, inodes) = try FileTree.usage(of: layerDirectory(of: id))
        return SnapshotUsage(size: size, inodes: inodes)
    }

    public func remove(id: Int64) throws(BerthError) {
        try layout.removeSnapshotDirectory(id)
    }

    public func storedIDs() throws(BerthError) -> [Int64] {
        layout.storedIDs()
    }
}
