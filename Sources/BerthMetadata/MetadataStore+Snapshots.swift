import BerthCore
import BerthSystem
import GRDB

/// Snapshots: names, parents, kinds and labels per namespace and snapshotter, with the files in
/// the snapshotter's storage under the row's id.
///
/// A snapshot becomes visible only once its storage is complete: Prepare inserts its row as not
/// `ready` (which reserves the key and pins the parent), makes the storage outside any
/// transaction, then marks the row ready. Removal deletes the row first and the files after.
/// A crash therefore leaves at worst a not-ready row or files without a row, both of which
/// ``recoverSnapshots()`` removes at start-up; no client ever sees a half-made snapshot.
extension MetadataStore {
    /// The snapshotter called `name`; `invalidArgument` if there is none, as containerd answers.
    public func snapshotter(_ name: String) throws(BerthError) -> any Snapshotter {
        guard let snapshotter = snapshotters[name] else {
            throw .invalidArgument("snapshotter not loaded: \(name)")
        }
        return snapshotter
    }

    /// The label an unpacker puts on the snapshot it prepares: the name it will commit it as.
    static let snapshotRefLabel = "containerd.io/snapshot.ref"

    struct SnapshotRow: Sendable {
        var id: Int64
        var info: SnapshotInfo
        var parentID: Int64?
        var size: Int64?
        var inodes: Int64?
    }

    static func snapshotRow(_ row: Row, parent: String) -> SnapshotRow {
        SnapshotRow(
            id: row["id"],
            info: SnapshotInfo(name: row["key"], parent: parent, kind: SnapshotKind(rawValue: row["kind"]) ?? .active,
                               labels: Codec.labels(row["labels"]),
                               createdAt: Codec.time(row, "created_at"), updatedAt: Codec.time(row, "updated_at")),
            parentID: row["parent_id"], size: row["size"], inodes: row["inodes"])
    }

    static func findSnapshot(_ db: Database, _ namespace: Namespace, snapshotter: String, key: String) throws -> SnapshotRow? {
        guard let row = try Row.fetchOne(db.cachedStatement(sql: """
            SELECT s.*, p.key AS parent_key FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id
            WHERE s.snapshotter = ? AND s.namespace = ? AND s.key = ? AND s.ready = 1
            """), arguments: [snapshotter, namespace.name, key]) else { return nil }
        return snapshotRow(row, parent: row["parent_key"] ?? "")
    }

    static func requireSnapshot(_ db: Database, _ namespace: Namespace, snapshotter: String, key: String) throws -> SnapshotRow {
        guard let row = try findSnapshot(db, namespace, snapshotter: snapshotter, key: key) else {
            throw BerthError.notFound("snapshot \(quoted(key)) in snapshotter \(snapshotter): not found")
        }
        return row
    }

    /// The ids of `id`'s ancestors, nearest first.
    static func ancestorIDs(_ db: Database, of parentID: Int64?) throws -> [Int64] {
        guard let parentID else { return [] }
        return try Int64.fetchAll(db.cachedStatement(sql: """
            WITH RECURSIVE chain(id, parent_id, depth) AS (
                SELECT id, parent_id, 0 FROM snapshots WHERE id = ?
                UNION ALL
                SELECT s.id, s.parent_id, chain.depth + 1 FROM snapshots s JOIN chain ON s.id = chain.parent_id
            )
            SELECT id FROM chain ORDER BY depth
            """), arguments: [parentID])
    }

    static func validateSnapshotKey(_ key: String, _ what: String = "key") throws(BerthError) {
        guard !key.isEmpty else { throw .invalidArgument("snapshot \(what) must not be empty") }
        guard key.utf8.count <= 4096, !key.unicodeScalars.contains(where: { $0.value < 0x20 }) else {
            throw .invalidArgument("snapshot \(what) \(quoted(String(key.prefix(60)))): too long or has control characters")
        }
    }

    /// Creates an active snapshot (`kind` `.active`) or a view (`.view`) named `key` on the
    /// committed snapshot `parent` ("" for none), and returns its mounts.
    ///
    /// - `alreadyExists` if `key` exists; `notFound` if `parent` does not; `invalidArgument` if
    ///   `parent` is not committed or the key is empty.
    /// - With a lease, the snapshot is added to it.
    public func prepareSnapshot(_ namespace: Namespace, snapshotter name: String, key: String, parent: String,
                                kind: SnapshotKind, labels: [String: String], lease: String?) async throws(BerthError) -> [Mount] {
        let snapshotter = try snapshotter(name)
        try Self.validateSnapshotKey(key)
        try Labels.validate(labels)
        guard kind != .committed else { throw .invalidArgument("snapshot \(quoted(key)): cannot prepare a committed snapshot") }
        let now = Timestamp.now.nanosecondsSinceEpoch
        // Not synced: the row is not ready yet, so no client sees it, and the commit that makes
        // it ready (synced) makes this one durable too.
        let (id, parents) = try await write(synced: false) { db -> (Int64, [Int64]) in
            try Self.ensureNamespace(db, namespace)
            // An unpacker names the committed snapshot it means to make (`containerd.io/snapshot.ref`);
            // if that exists already, another pull made it, and the layer need not be applied again.
            if let target = labels[Self.snapshotRefLabel], !target.isEmpty,
               try Bool.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM snapshots WHERE snapshotter = ? AND namespace = ? AND key = ?"),
                                 arguments: [name, namespace.name, target]) == true {
                throw BerthError.alreadyExists("target snapshot \(quoted(target)): already exists")
            }
            if try Bool.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM snapshots WHERE snapshotter = ? AND namespace = ? AND key = ?"),
                                 arguments: [name, namespace.name, key]) == true {
                throw BerthError.alreadyExists("snapshot \(quoted(key)): already exists")
            }
            var parentID: Int64?
            if !parent.isEmpty {
                guard let parentRow = try Self.findSnapshot(db, namespace, snapshotter: name, key: parent) else {
                    throw BerthError.notFound("parent snapshot \(quoted(parent)) does not exist")
                }
                guard parentRow.info.kind == .committed else {
                    throw BerthError.invalidArgument("parent snapshot \(quoted(parent)) is not committed")
                }
                parentID = parentRow.id
            }
            if let lease {
                try Self.addLeaseResource(db, namespace, lease: lease, LeaseResource(id: key, type: "snapshots/\(name)"))
            }
            try db.cachedStatement(sql: """
                INSERT INTO snapshots (snapshotter, namespace, key, parent_id, kind, labels, ready, created_at, updated_at)
                VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?)
                """).execute(arguments: [name, namespace.name, key, parentID, kind.rawValue, Codec.encode(labels), now, now])
            let id = db.lastInsertedRowID
            // Before the commit, under the writer: collection never sees this row unclaimed.
            self.preparingSnapshots.withLock { _ = $0.insert(id) }
            return (id, try Self.ancestorIDs(db, of: parentID))
        }
        do {
            let create = { @Sendable () throws(BerthError) in try snapshotter.create(id: id, parents: parents, kind: kind) }
            if snapshotter.copiesOnCreate { try await runBlocking(create) } else { try await runShortBlocking(create) }
            try await write { db in
                try db.cachedStatement(sql: "UPDATE snapshots SET ready = 1 WHERE id = ?").execute(arguments: [id])
                self.preparingSnapshots.withLock { _ = $0.remove(id) }
            }
        } catch {
            // Undone on a Dispatch thread with GRDB's synchronous API: a cancelled call must
            // still roll back, and an async write would give up at once when cancelled.
            try? await runBlocking { () throws(BerthError) in
                try? self.writeNow { db in
                    try db.cachedStatement(sql: "DELETE FROM snapshots WHERE id = ?").execute(arguments: [id])
                    try db.cachedStatement(sql: "DELETE FROM lease_resources WHERE namespace = ? AND type = ? AND id = ?").execute(
                                   arguments: [namespace.name, "snapshots/\(name)", key])
                    self.preparingSnapshots.withLock { _ = $0.remove(id) }
                }
                try? snapshotter.remove(id: id)
            }
            throw error
        }
        return snapshotter.mounts(id: id, parents: parents, kind: kind)
    }

    /// The mounts of an active snapshot or view; `notFound` if `key` does not exist,
    /// `failedPrecondition` for a committed snapshot (mount a view of it instead).
    public func snapshotMounts(_ namespace: Namespace, snapshotter name: String, key: String) async throws(BerthError) -> [Mount] {
        let snapshotter = try snapshotter(name)
        let (row, parents) = try await read { db in
            let row = try Self.requireSnapshot(db, namespace, snapshotter: name, key: key)
            return (row, try Self.ancestorIDs(db, of: row.parentID))
        }
        guard row.info.kind != .committed else {
            throw .failedPrecondition("snapshot \(quoted(key)): a committed snapshot has no mounts; view it instead")
        }
        return snapshotter.mounts(id: row.id, parents: parents, kind: row.info.kind)
    }

    /// Commits the active snapshot `key` as the immutable snapshot `name` with `labels`; the
    /// active key is gone afterwards. Its usage is recorded now, as the layer cannot change.
    ///
    /// `notFound` if `key` does not exist, `failedPrecondition` if it is not active,
    /// `alreadyExists` if `name` exists.
    public func commitSnapshot(_ namespace: Namespace, snapshotter name: String, name committedName: String, key: String,
                               labels: [String: String], lease: String?) async throws(BerthError) {
        let snapshotter = try snapshotter(name)
        try Self.validateSnapshotKey(committedName, "name")
        try Labels.validate(labels)
        let row = try await read { db in try Self.requireSnapshot(db, namespace, snapshotter: name, key: key) }
        guard row.info.kind == .active else { throw .failedPrecondition("snapshot \(quoted(key)) is not active") }
        let usage = try await runBlocking { () throws(BerthError) in try snapshotter.usage(id: row.id) }
        let now = Timestamp.now.nanosecondsSinceEpoch
        try await write { db in
            guard let current = try Self.findSnapshot(db, namespace, snapshotter: name, key: key), current.id == row.id,
                  current.info.kind == .active else {
                throw BerthError.notFound("snapshot \(quoted(key)) in snapshotter \(name): not found")
            }
            if try Bool.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM snapshots WHERE snapshotter = ? AND namespace = ? AND key = ?"),
                                 arguments: [name, namespace.name, committedName]) == true {
                throw BerthError.alreadyExists("snapshot \(quoted(committedName)): already exists")
            }
            try db.cachedStatement(sql: """
                UPDATE snapshots SET key = ?, kind = 'committed', labels = ?, size = ?, inodes = ?, created_at = ?, updated_at = ?
                WHERE id = ?
                """).execute(arguments: [committedName, Codec.encode(labels), usage.size, usage.inodes, now, now, row.id])
            if let lease {
                try Self.addLeaseResource(db, namespace, lease: lease, LeaseResource(id: committedName, type: "snapshots/\(name)"))
                try db.cachedStatement(sql: "DELETE FROM lease_resources WHERE namespace = ? AND lease = ? AND type = ? AND id = ?").execute(
                               arguments: [namespace.name, lease, "snapshots/\(name)", key])
            }
        }
    }

    /// Removes a snapshot and its files. `notFound` if it does not exist, `failedPrecondition`
    /// if other snapshots are its children.
    public func removeSnapshot(_ namespace: Namespace, snapshotter name: String, key: String) async throws(BerthError) {
        let snapshotter = try snapshotter(name)
        let id = try await write { db -> Int64 in
            let row = try Self.requireSnapshot(db, namespace, snapshotter: name, key: key)
            if try Bool.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM snapshots WHERE parent_id = ? LIMIT 1"), arguments: [row.id]) == true {
                throw BerthError.failedPrecondition("snapshot \(quoted(key)): cannot remove a snapshot that has children")
            }
            try db.cachedStatement(sql: "DELETE FROM snapshots WHERE id = ?").execute(arguments: [row.id])
            // A stale lease entry would keep a later snapshot with the same key.
            try db.cachedStatement(sql: "DELETE FROM lease_resources WHERE namespace = ? AND type = ? AND id = ?").execute(
                           arguments: [namespace.name, "snapshots/\(name)", key])
            return row.id
        }
        // Files after the row: a crash in between leaves files without a row, which start-up
        // and garbage collection remove; so does a failure here, which the removal outlives.
        try? await runShortBlocking { () throws(BerthError) in try snapshotter.remove(id: id) }
        onDeletion()
    }

    public func snapshotInfo(_ namespace: Namespace, snapshotter name: String, key: String) async throws(BerthError) -> SnapshotInfo {
        _ = try snapshotter(name)
        return try await read { db in try Self.requireSnapshot(db, namespace, snapshotter: name, key: key).info }
    }

    /// Updates a snapshot's labels (paths `labels`, `labels.<key>`; none replaces them all).
    /// Other fields are immutable: `invalidArgument`.
    public func updateSnapshot(_ namespace: Namespace, snapshotter name: String, key: String, labels updated: [String: String],
                               paths: [String]) async throws(BerthError) -> SnapshotInfo {
        _ = try snapshotter(name)
        return try await write { db in
            let row = try Self.requireSnapshot(db, namespace, snapshotter: name, key: key)
            var info = row.info
            try updateLabels(&info.labels, with: updated, paths: paths, object: "snapshot \(quoted(key))")
            info.updatedAt = .now
            try db.cachedStatement(sql: "UPDATE snapshots SET labels = ?, updated_at = ? WHERE id = ?").execute(
                           arguments: [Codec.encode(info.labels), info.updatedAt.nanosecondsSinceEpoch, row.id])
            return info
        }
    }

    public func snapshots(_ namespace: Namespace, snapshotter name: String, filter: Filter) async throws(BerthError) -> [SnapshotInfo] {
        _ = try snapshotter(name)
        return try await read { db in
            try Row.fetchAll(db.cachedStatement(sql: """
                SELECT s.*, p.key AS parent_key FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id
                WHERE s.snapshotter = ? AND s.namespace = ? AND s.ready = 1 ORDER BY s.key
                """), arguments: [name, namespace.name])
                .map { Self.snapshotRow($0, parent: $0["parent_key"] ?? "").info }
                .filter(filter.matches)
        }
    }

    /// A committed snapshot's usage as recorded at commit; an active one's measured now.
    public func snapshotUsage(_ namespace: Namespace, snapshotter name: String, key: String) async throws(BerthError) -> SnapshotUsage {
        let snapshotter = try snapshotter(name)
        let row = try await read { db in try Self.requireSnapshot(db, namespace, snapshotter: name, key: key) }
        if row.info.kind == .committed, let size = row.size, let inodes = row.inodes {
            return SnapshotUsage(size: size, inodes: inodes)
        }
        return try await runBlocking { () throws(BerthError) in try snapshotter.usage(id: row.id) }
    }

    /// Removes what a crash left: rows whose storage was never finished, and storage no row
    /// names. Call at start-up, before serving: a not-ready row is then never a running Prepare.
    public func recoverSnapshots() async throws(BerthError) {
        try await write { db in try db.cachedStatement(sql: "DELETE FROM snapshots WHERE ready = 0").execute() }
        try await removeOrphanedStorage(Array(snapshotters.values))
    }

    /// Removes storage of `snapshotter` that no snapshot uses (Snapshots/Cleanup).
    public func cleanupSnapshots(snapshotter name: String) async throws(BerthError) {
        try await removeOrphanedStorage([try snapshotter(name)])
    }

    func removeOrphanedStorage(_ snapshotters: [any Snapshotter]) async throws(BerthError) {
        // Snapshot ids are never reused (AUTOINCREMENT), so storage no row names now stays
        // unnamed: it is found under the writer and removed after, without holding it.
        // Decided under the writer: storage is made only after its row commits, so no storage
        // listed here can belong to a row that commits later.
        let doomed = try await writeWithoutTransaction { db in try Self.orphanedStorage(db, snapshotters).map(SendableStorage.init) }
        await Self.removeStorage(doomed.map { ($0.snapshotter, $0.id) })
    }

    /// Removes snapshot storage off the cooperative pool; one that cannot be removed (a busy
    /// mount point, an immutable file) is left for the next attempt instead of stopping the rest.
    static func removeStorage(_ doomed: [(any Snapshotter, Int64)]) async {
        guard !doomed.isEmpty else { return }
        let list = doomed.map { SendableStorage(snapshotter: $0.0, id: $0.1) }
        _ = try? await runBlocking { () throws(BerthError) in
            for item in list { try? item.snapshotter.remove(id: item.id) }
        }
    }

    struct SendableStorage: Sendable {
        let snapshotter: any Snapshotter
        let id: Int64

        init(_ pair: (any Snapshotter, Int64)) {
            snapshotter = pair.0
            id = pair.1
        }

        init(snapshotter: any Snapshotter, id: Int64) {
            self.snapshotter = snapshotter
            self.id = id
        }
    }

    /// Storage ids no row names (a not-ready row names its storage: its Prepare may be running).
    static func orphanedStorage(_ db: Database, _ snapshotters: [any Snapshotter]) throws -> [(any Snapshotter, Int64)] {
        var doomed: [(any Snapshotter, Int64)] = []
        for snapshotter in snapshotters {
            let known = Set(try Int64.fetchAll(db.cachedStatement(sql: "SELECT id FROM snapshots WHERE snapshotter = ?"), arguments: [snapshotter.name]))
            for id in (try? snapshotter.storedIDs()) ?? [] where !known.contains(id) {
                doomed.append((snapshotter, id))
            }
        }
        return doomed
    }
}
