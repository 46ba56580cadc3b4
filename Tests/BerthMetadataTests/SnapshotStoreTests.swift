import BerthContent
import BerthCore
@testable import BerthMetadata
import BerthTestSupport
import Foundation
import Logging
import Synchronization
import Testing

/// Snapshot storage kept in memory: which ids exist, and a switch to make `create` fail.
final class FakeSnapshotter: Snapshotter {
    let name = "fake"
    private let state = Mutex<(stored: Set<Int64>, failCreate: Bool)>(([], false))

    var stored: Set<Int64> { state.withLock { $0.stored } }
    func failNextCreate() { state.withLock { $0.failCreate = true } }
    func leaveOrphan(_ id: Int64) { _ = state.withLock { $0.stored.insert(id) } }

    func create(id: Int64, parents: [Int64], kind: SnapshotKind) throws(BerthError) {
        let fail = state.withLock { state -> Bool in
            defer { state.failCreate = false }
            if state.failCreate { return true }
            state.stored.insert(id)
            return false
        }
        if fail { throw BerthError(.resourceExhausted, "no space left on device") }
    }
    func mounts(id: Int64, parents: [Int64], kind: SnapshotKind) -> [Mount] {
        [Mount(type: "fake", source: "\(id)", options: parents.map { "parent=\($0)" })]
    }
    func usage(id: Int64) throws(BerthError) -> SnapshotUsage { SnapshotUsage(size: 4096, inodes: 1) }
    func remove(id: Int64) throws(BerthError) { _ = state.withLock { $0.stored.remove(id) } }
    func storedIDs() throws(BerthError) -> [Int64] { Array(stored) }
}

func withSnapshotStore<T>(_ body: (MetadataStore, FakeSnapshotter) async throws -> T) async throws -> T {
    try await withTemporaryDirectory(prefix: "berth-meta") { dir in
        let fake = FakeSnapshotter()
        let store = try MetadataStore(path: dir.appending("meta.db"), blobs: try BlobStore(root: dir.appending("content")),
                                      snapshotters: [fake])
        defer { try? store.close() }
        return try await body(store, fake)
    }
}

extension MetadataStore {
    /// Prepares `key` on `parent` and commits it as `name`.
    func layer(_ name: String, parent: String = "", namespace: Namespace = .default, labels: [String: String] = [:]) async throws {
        _ = try await prepareSnapshot(namespace, snapshotter: "fake", key: "\(name)-active", parent: parent, kind: .active,
                                      labels: [:], lease: nil)
        try await commitSnapshot(namespace, snapshotter: "fake", name: name, key: "\(name)-active", labels: labels, lease: nil)
    }

    func snapshotNames(_ namespace: Namespace = .default) async throws -> [String] {
        try await snapshots(namespace, snapshotter: "fake", filter: .all).map(\.name)
    }
}

@Suite("MetadataStore: snapshots and their collection")
struct SnapshotStoreTests {
    func gc(_ store: MetadataStore) -> GarbageCollector { GarbageCollector(store: store, logger: Logger(label: "test")) }

    @Test func mountsCarryTheParentChainNearestFirst() async throws {
        try await withSnapshotStore { store, _ in
            try await store.layer("l1")
            try await store.layer("l2", parent: "l1")
            let mounts = try await store.prepareSnapshot(.default, snapshotter: "fake", key: "top", parent: "l2", kind: .active,
                                                         labels: [:], lease: nil)
            let ids = try await store.read { db in try Int64.fetchAll(db, sql: "SELECT id FROM snapshots ORDER BY id") }
            #expect(mounts == [Mount(type: "fake", source: "\(ids[2])", options: ["parent=\(ids[1])", "parent=\(ids[0])"])])
            #expect(try await store.snapshotMounts(.default, snapshotter: "fake", key: "top") == mounts)
        }
    }

    @Test func unknownSnapshotterIsInvalidArgument() async throws {
        try await withSnapshotStore { store, _ in
            do {
                _ = try await store.snapshots(.default, snapshotter: "zfs", filter: .all)
                Issue.record("an unknown snapshotter should fail")
            } catch let error as BerthError {
                #expect(error.code == .invalidArgument && error.message.contains("snapshotter not loaded: zfs"))
            }
        }
    }

    @Test func failedStorageLeavesNoSnapshot() async throws {
        try await withSnapshotStore { store, fake in
            fake.failNextCreate()
            do {
                _ = try await store.prepareSnapshot(.default, snapshotter: "fake", key: "k", parent: "", kind: .active, labels: [:], lease: nil)
                Issue.record("prepare should fail")
            } catch let error as BerthError { #expect(error.code == .resourceExhausted) }
            #expect(try await store.snapshotNames().isEmpty)
            #expect(fake.stored.isEmpty)
            // The key is free again.
            _ = try await store.prepareSnapshot(.default, snapshotter: "fake", key: "k", parent: "", kind: .active, labels: [:], lease: nil)
        }
    }

    @Test func namespacesAreSeparate() async throws {
        try await withSnapshotStore { store, _ in
            try await store.layer("l1")
            try await store.layer("l1", namespace: ns("other"))
            #expect(try await store.snapshotNames() == ["l1"])
            #expect(try await store.snapshotNames(ns("other")) == ["l1"])
            do { try await store.deleteNamespace(ns("other")); Issue.record("delete should fail") } catch let error as BerthError {
                #expect(error.code == .failedPrecondition && error.message.contains("snapshots"))
            }
        }
    }

    @Test func collectionKeepsWhatIsReferencedAndRemovesTheRest() async throws {
        try await withSnapshotStore { store, fake in
            // An image's config names the top of a chain, as ctr's unpack labels it.
            let config = try await commitContent(store, .default, bytes(#"{"architecture":"amd64"}"#),
                                                 labels: ["containerd.io/gc.ref.snapshot.fake": "img-2"])
            _ = try await store.createImage(.default, Image(name: "img", target: Descriptor(mediaType: MediaType.ociConfig, digest: config, size: 24)))
            try await store.layer("img-1")
            try await store.layer("img-2", parent: "img-1")
            // A chain only a container uses; one only a lease holds; one labelled gc.root; garbage.
            try await store.layer("c-base")
            _ = try await store.prepareSnapshot(.default, snapshotter: "fake", key: "c1-rootfs", parent: "c-base", kind: .active,
                                                labels: [:], lease: nil)
            var container = sampleContainer("c1")
            container.snapshotter = "fake"
            container.snapshotKey = "c1-rootfs"
            _ = try await store.createContainer(.default, container)
            _ = try await store.createLease(.default, id: "hold", labels: [:])
            _ = try await store.prepareSnapshot(.default, snapshotter: "fake", key: "leased", parent: "", kind: .active, labels: [:], lease: "hold")
            try await store.layer("rooted", labels: [Labels.gcRoot: "yes"])
            try await store.layer("garbage-base")
            _ = try await store.prepareSnapshot(.default, snapshotter: "fake", key: "garbage", parent: "garbage-base", kind: .view,
                                                labels: [:], lease: nil)
            fake.leaveOrphan(9999)

            let result = try await gc(store).collect()
            #expect(result.snapshotsRemoved == 2)
            #expect(try await store.snapshotNames() == ["c-base", "c1-rootfs", "img-1", "img-2", "leased", "rooted"])
            #expect(fake.stored.count == 6, "garbage and the orphan's storage removed: \(fake.stored.sorted())")

            // Without the image, its chain goes; without the lease, the leased snapshot goes.
            try await store.deleteImage(.default, name: "img")
            try await store.deleteLease(.default, id: "hold")
            try await store.deleteContainer(.default, id: "c1")
            #expect(try await gc(store).collect().snapshotsRemoved == 5)
            #expect(try await store.snapshotNames() == ["rooted"])
            #expect(fake.stored.count == 1)
        }
    }

    @Test func snapshotLabelsReferenceOtherSnapshotsAndContent() async throws {
        try await withSnapshotStore { store, _ in
            let blob = try await commitContent(store, .default, bytes("kept by a snapshot"))
            try await store.layer("target")
            try await store.layer("holder", labels: [Labels.gcRoot: "1", "containerd.io/gc.ref.snapshot.fake/x": "target",
                                                     "containerd.io/gc.ref.content.l": blob.description])
            _ = try await gc(store).collect()
            #expect(try await store.snapshotNames() == ["holder", "target"])
            #expect(try await store.contents(.default, filter: .all).map(\.digest) == [blob])
        }
    }

    @Test func prepareForAnExistingTargetIsAlreadyExists() async throws {
        try await withSnapshotStore { store, _ in
            try await store.layer("chain-1")
            do {
                _ = try await store.prepareSnapshot(.default, snapshotter: "fake", key: "extract-1 chain-1", parent: "", kind: .active,
                                                    labels: ["containerd.io/snapshot.ref": "chain-1"], lease: nil)
                Issue.record("prepare should answer alreadyExists")
            } catch let error as BerthError {
                #expect(error.code == .alreadyExists && error.message.contains("target snapshot"))
            }
            // A target that does not exist yet is just a label.
            _ = try await store.prepareSnapshot(.default, snapshotter: "fake", key: "extract-2 chain-2", parent: "chain-1", kind: .active,
                                                labels: ["containerd.io/snapshot.ref": "chain-2"], lease: nil)
        }
    }

    @Test func commitMovesTheLeaseFromKeyToName() async throws {
        try await withSnapshotStore { store, _ in
            _ = try await store.createLease(.default, id: "pull", labels: [:])
            _ = try await store.prepareSnapshot(.default, snapshotter: "fake", key: "extract", parent: "", kind: .active, labels: [:], lease: "pull")
            try await store.commitSnapshot(.default, snapshotter: "fake", name: "chain", key: "extract", labels: [:], lease: "pull")
            let resources = try await store.leaseResources(.default, lease: "pull")
            #expect(resources == [LeaseResource(id: "chain", type: "snapshots/fake")])
            #expect(try await gc(store).collect().snapshotsRemoved == 0)
        }
    }

    @Test func collectionKeepsAPrepareInFlightButNotAnAbandonedRow() async throws {
        try await withSnapshotStore { store, fake in
            try await store.layer("base")
            // Two rows not ready on "base": one whose Prepare is running, one a failed clean-up left.
            let ids = try await store.write { db -> [Int64] in
                var ids: [Int64] = []
                for key in ["running", "abandoned"] {
                    try db.execute(sql: """
                        INSERT INTO snapshots (snapshotter, namespace, key, parent_id, kind, ready, created_at, updated_at)
                        VALUES ('fake', 'default', ?, (SELECT id FROM snapshots WHERE key = 'base'), 'active', 0, 0, 0)
                        """, arguments: [key])
                    ids.append(db.lastInsertedRowID)
                }
                return ids
            }
            store.preparingSnapshots.withLock { _ = $0.insert(ids[0]) }
            _ = try await gc(store).collect()
            let rows = try await store.read { db in try String.fetchAll(db, sql: "SELECT key FROM snapshots ORDER BY key") }
            #expect(rows == ["base", "running"], "the running Prepare keeps itself and its parent: \(rows)")
            store.preparingSnapshots.withLock { _ = $0.remove(ids[0]) }
            _ = try await gc(store).collect()
            #expect(try await store.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM snapshots") } == 0)
            #expect(fake.stored.isEmpty)
        }
    }

    @Test func cancelledPrepareRollsBack() async throws {
        try await withSnapshotStore { store, fake in
            fake.failNextCreate()
            let task = Task {
                withUnsafeCurrentTask { $0?.cancel() }
                return try await store.prepareSnapshot(.default, snapshotter: "fake", key: "k", parent: "", kind: .active,
                                                       labels: [:], lease: nil)
            }
            _ = try? await task.value
            let rows = try await store.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM snapshots") }
            #expect(rows == 0, "a cancelled, failed Prepare leaves no row")
            #expect(store.preparingSnapshots.withLock { $0.isEmpty })
        }
    }

    @Test func recoveryRemovesUnfinishedRowsAndOrphanedStorage() async throws {
        try await withSnapshotStore { store, fake in
            try await store.layer("done")
            // As if a crash hit between the row and the storage of a Prepare.
            try await store.write { db in
                try db.execute(sql: """
                    INSERT INTO snapshots (snapshotter, namespace, key, kind, ready, created_at, updated_at)
                    VALUES ('fake', 'default', 'half', 'active', 0, 0, 0)
                    """)
            }
            fake.leaveOrphan(4242)
            try await store.recoverSnapshots()
            #expect(try await store.snapshotNames() == ["done"])
            #expect(fake.stored.count == 1)
            // A new snapshot can take the key.
            _ = try await store.prepareSnapshot(.default, snapshotter: "fake", key: "half", parent: "", kind: .active, labels: [:], lease: nil)
        }
    }
}
