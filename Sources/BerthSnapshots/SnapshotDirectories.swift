import BerthArchive
import BerthCore
import BerthSystem
import Glibc

/// `<root>/snapshots/<id>`: one directory per snapshot, named by the id the metadata store
/// gave it. A snapshot is removed by renaming its directory into `<root>/removing/`, whose trees
/// are deleted afterwards, so a crash mid-removal never leaves a half-deleted tree under a live id.
struct SnapshotDirectories: Sendable {
    let root: String

    var snapshots: String { root + "/snapshots" }
    var removing: String { root + "/removing" }

    func directory(of id: Int64) -> String { "\(snapshots)/\(id)" }

    func prepare() throws(BerthError) {
        try FileSystem.makeDirectories(snapshots, mode: 0o700)
        try FileSystem.makeDirectories(removing, mode: 0o700)
        // Whatever a crash left mid-removal.
        for name in FileSystem.list(removing) { try? FileTree.removeTree(removing + "/" + name) }
    }

    func makeSnapshotDirectory(_ id: Int64) throws(BerthError) {
        let path = directory(of: id)
        guard mkdir(path, 0o755) == 0 else {
            if errno == EEXIST {
                // Left by a crash before its record was written: the id is ours now.
                try FileTree.removeTree(path)
                guard mkdir(path, 0o755) == 0 else { throw errnoError("snapshot directory \(path): create") }
                return
            }
            throw errnoError("snapshot directory \(path): create")
        }
    }

    func removeSnapshotDirectory(_ id: Int64) throws(BerthError) {
        let path = directory(of: id)
        let doomed = "\(removing)/\(id)-\(UInt32.random(in: 0...UInt32.max))"
        guard rename(path, doomed) == 0 else {
            if errno == ENOENT { return }
            throw errnoError("snapshot directory \(path): remove")
        }
        // The snapshot is gone with the rename; its files go on a blocking thread, so the caller
        // (a client's Remove) does not wait for them. What a crash leaves there, `prepare` removes.
        BlockingThreads.shared.submit { try? FileTree.removeTree(doomed) }
    }

    func storedIDs() -> [Int64] {
        FileSystem.list(snapshots).compactMap { Int64($0) }
    }
}
