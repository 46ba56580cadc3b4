import BerthContent
import BerthCore
import BerthMetadata
import BerthSnapshots
import BerthTestSupport
import Foundation
import Testing

/// Berth's snapshot API (the metadata store over one snapshotter's storage) as the
/// conformance suite drives it.
struct StoreSnapshotter: SnapshotterUnderTest {
    let store: MetadataStore
    let storage: any Snapshotter
    let scratch: String
    let namespace = Namespace.default
    var name: String { storage.name }

    func prepare(_ key: String, parent: String, labels: [String: String]) async throws(BerthError) -> [Mount] {
        try await store.prepareSnapshot(namespace, snapshotter: name, key: key, parent: parent, kind: .active, labels: labels, lease: nil)
    }
    func view(_ key: String, parent: String) async throws(BerthError) -> [Mount] {
        try await store.prepareSnapshot(namespace, snapshotter: name, key: key, parent: parent, kind: .view, labels: [:], lease: nil)
    }
    func mounts(_ key: String) async throws(BerthError) -> [Mount] {
        try await store.snapshotMounts(namespace, snapshotter: name, key: key)
    }
    func commit(_ committed: String, key: String, labels: [String: String]) async throws(BerthError) {
        try await store.commitSnapshot(namespace, snapshotter: name, name: committed, key: key, labels: labels, lease: nil)
    }
    func remove(_ key: String) async throws(BerthError) {
        try await store.removeSnapshot(namespace, snapshotter: name, key: key)
    }
    func stat(_ key: String) async throws(BerthError) -> SnapshotInfo {
        try await store.snapshotInfo(namespace, snapshotter: name, key: key)
    }
    func update(_ key: String, labels: [String: String], paths: [String]) async throws(BerthError) -> SnapshotInfo {
        try await store.updateSnapshot(namespace, snapshotter: name, key: key, labels: labels, paths: paths)
    }
    func list(filters: [String]) async throws(BerthError) -> [SnapshotInfo] {
        try await store.snapshots(namespace, snapshotter: name, filter: try Filter(parsing: filters))
    }
    func usage(_ key: String) async throws(BerthError) -> SnapshotUsage {
        try await store.snapshotUsage(namespace, snapshotter: name, key: key)
    }
    func storedIDs() throws(BerthError) -> [Int64] { try storage.storedIDs() }
}

enum SnapshotterKind: String, CaseIterable, Sendable {
    case overlayfs, native

    func make(root: String) throws -> any Snapshotter {
        switch self {
        case .overlayfs: try OverlaySnapshotter(root: "\(root)/snapshots/overlayfs")
        case .native: try NativeSnapshotter(root: "\(root)/snapshots/native")
        }
    }
}

/// Runs `body` with a fresh store and snapshotter in a temporary root, removed afterwards.
func withSnapshotter(_ kind: SnapshotterKind, _ body: (StoreSnapshotter) async throws -> Void) async throws {
    let directory = try TemporaryDirectory(prefix: "berth-snap")
    defer { directory.remove() }
    let storage = try kind.make(root: directory.path)
    let blobs = try BlobStore(root: directory.appending("content"))
    let store = try MetadataStore(path: directory.appending("metadata.db"), blobs: blobs, snapshotters: [storage])
    defer { try? store.close() }
    try FileManager.default.createDirectory(atPath: directory.appending("scratch"), withIntermediateDirectories: true)
    try await body(StoreSnapshotter(store: store, storage: storage, scratch: directory.appending("scratch")))
}

@Suite("Snapshotter conformance", .serialized)
struct SnapshotterConformanceTests {
    static let arguments: [(SnapshotterKind, SnapshotterConformance.Case)] =
        SnapshotterKind.allCases.flatMap { kind in SnapshotterConformance.cases.map { (kind, $0) } }

    @Test(arguments: arguments)
    func conformance(_ kind: SnapshotterKind, _ check: SnapshotterConformance.Case) async throws {
        try await withSnapshotter(kind) { snapshotter in try await check.run(snapshotter) }
    }
}
