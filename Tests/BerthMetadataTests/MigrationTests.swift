import BerthContent
import BerthCore
@testable import BerthMetadata
import BerthTestSupport
import Foundation
import GRDB
import Testing

/// The schema's migrations, tested against databases written by older versions.
///
/// Only migration v1 exists so far, so "migrating forward" from v1 applies nothing yet. What
/// these tests pin today: a database built by exactly the v1 migration, with rows written in
/// v1's format (JSON labels, nanosecond timestamps, raw spec bytes), opens with the current
/// code, is recognised as migrated, and reads back intact. When v2 is added, the first test
/// starts exercising the v1 → latest path without changes.
@Suite("Migrations")
struct MigrationTests {
    static let v1 = "v1: namespaces, content, images, leases, containers"

    @Test func migrationsAreNumberedAndStartWithV1() {
        let migrations = Schema.migrator.migrations
        #expect(migrations.first == Self.v1)
        for (n, identifier) in migrations.enumerated() {
            #expect(identifier.hasPrefix("v\(n + 1): "), "migration \(n) is named \(identifier)")
        }
    }

    @Test func freshStoreAppliesEveryMigration() async throws {
        try await withStore { (store, _) async throws in
            #expect(try store.appliedMigrations() == Schema.migrator.migrations)
            #expect(try store.appliedMigrations().contains(Self.v1))
        }
    }

    /// GRDB sets a new pool's writer to `synchronous = NORMAL`, under which WAL commits are not
    /// synced to disk one by one; the store must end up with FULL on the connection that writes.
    @Test func commitsAreSyncedToDisk() async throws {
        try await withStore { (store, _) async throws in
            let (journal, synchronous) = try await store.pool.writeWithoutTransaction { db in
                (try String.fetchOne(db, sql: "PRAGMA journal_mode"), try Int.fetchOne(db, sql: "PRAGMA synchronous"))
            }
            #expect(journal == "wal")
            #expect(synchronous == 2, "PRAGMA synchronous is \(String(describing: synchronous)), not FULL (2)")
            // An unsynced step (a Prepare's first commit) leaves the writer syncing again, even
            // when it fails.
            try await store.write(synced: false) { db in try db.execute(sql: "INSERT INTO namespaces (name, labels, created_at, updated_at) VALUES ('n', '{}', 0, 0)") }
            await #expect(throws: BerthError.self) {
                try await store.write(synced: false) { db in try db.execute(sql: "INSERT INTO nowhere VALUES (1)") }
            }
            let after = try await store.pool.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") }
            #expect(after == 2)
            #expect(try await store.namespace(ns("n")).name == "n")
        }
    }

    @Test func v1DatabaseOpensAndKeepsItsRows() async throws {
        try await withTemporaryDirectory(prefix: "berth-migrate") { (dir) async throws in
            let path = dir.appending("meta.db")
            let digest = Known.helloWorldSHA256.description
            let created: Int64 = 1_700_000_000_123_456_789

            // A database exactly as version 1 made it.
            let old = try DatabaseQueue(path: path)
            try Schema.migrator.migrate(old, upTo: Self.v1)
            try await old.write { db in
                try db.execute(sql: "INSERT INTO namespaces (name, labels, created_at, updated_at) VALUES ('legacy', '{\"team\":\"infra\"}', ?, ?)",
                               arguments: [created, created])
                try db.execute(sql: """
                    INSERT INTO content (namespace, digest, size, labels, created_at, updated_at)
                    VALUES ('legacy', ?, 11, '{"containerd.io/gc.root":"x"}', ?, ?)
                    """, arguments: [digest, created, created])
                try db.execute(sql: """
                    INSERT INTO images (namespace, name, labels, media_type, digest, size, annotations, created_at, updated_at)
                    VALUES ('legacy', 'busybox:1', '{}', ?, ?, 11, '{"a":"b"}', ?, ?)
                    """, arguments: [MediaType.ociManifest, digest, created, created])
                try db.execute(sql: "INSERT INTO leases (namespace, id, labels, created_at) VALUES ('legacy', 'l1', '{}', ?)",
                               arguments: [created])
                try db.execute(sql: "INSERT INTO lease_resources (namespace, lease, type, id) VALUES ('legacy', 'l1', 'content', ?)",
                               arguments: [digest])
                try db.execute(sql: """
                    INSERT INTO containers (namespace, id, labels, image, runtime_name, spec_type, spec, snapshotter,
                                            snapshot_key, created_at, updated_at)
                    VALUES ('legacy', 'c1', '{"app":"web"}', 'busybox:1', 'io.containerd.runc.v2', ?, ?, 'overlayfs', 'c1', ?, ?)
                    """, arguments: [specType, Data([1, 2, 3]), created, created])
            }
            try old.close()

            let store = try MetadataStore(path: path, blobs: try BlobStore(root: dir.appending("content")))
            defer { try? store.close() }
            #expect(try store.appliedMigrations() == Schema.migrator.migrations)

            let legacy = ns("legacy")
            #expect(try await store.namespace(legacy).labels == ["team": "infra"])
            let info = try await store.contentInfo(legacy, digest: Known.helloWorldSHA256)
            #expect(info.size == 11)
            #expect(info.labels == [Labels.gcRoot: "x"])
            #expect(info.createdAt == Timestamp(nanosecondsSinceEpoch: created))
            let image = try await store.image(legacy, name: "busybox:1")
            #expect(image.target == Descriptor(mediaType: MediaType.ociManifest, digest: Known.helloWorldSHA256, size: 11,
                                               annotations: ["a": "b"]))
            #expect(image.createdAt == Timestamp(seconds: 1_700_000_000, nanos: 123_456_789))
            #expect(try await store.leases(legacy, filter: .all).map(\.id) == ["l1"])
            #expect(try await store.leaseResources(legacy, lease: "l1") == [LeaseResource(id: digest, type: "content")])
            let container = try await store.container(legacy, id: "c1")
            #expect(container.spec == TypedValue(typeURL: specType, value: [1, 2, 3]))
            #expect(container.runtimeOptions == nil)
            #expect(container.labels == ["app": "web"])
            #expect(container.extensions.isEmpty)

            // And the old database takes new writes.
            _ = try await store.createImage(legacy, sampleImage("new"))
            #expect(try await store.images(legacy, filter: .all).map(\.name) == ["busybox:1", "new"])
        }
    }

    @Test func dataSurvivesReopening() async throws {
        try await withTemporaryDirectory(prefix: "berth-reopen") { (dir) async throws in
            let path = dir.appending("meta.db")
            let blobRoot = dir.appending("content")
            do {
                let store = try MetadataStore(path: path, blobs: try BlobStore(root: blobRoot))
                _ = try await store.createNamespace(ns("kept"), labels: ["x": "y"])
                _ = try await store.createImage(ns("kept"), sampleImage("img", labels: ["k": "v"]))
                _ = try await store.createContainer(ns("kept"), sampleContainer("c1"))
                _ = try await store.createLease(ns("kept"), id: "l1", labels: [:])
                try await commitContent(store, ns("kept"), Known.helloWorld, lease: "l1", labels: ["c": "d"])
                try store.close()
            }
            let store = try MetadataStore(path: path, blobs: try BlobStore(root: blobRoot))
            defer { try? store.close() }
            #expect(try store.appliedMigrations() == Schema.migrator.migrations)
            #expect(try await store.namespace(ns("kept")).labels == ["x": "y"])
            #expect(try await store.image(ns("kept"), name: "img").labels == ["k": "v"])
            #expect(try await store.container(ns("kept"), id: "c1") == sampleContainerWithTimes(try await store.container(ns("kept"), id: "c1")))
            #expect(try await store.contentInfo(ns("kept"), digest: Known.helloWorldSHA256).labels == ["c": "d"])
            #expect(try await store.leaseResources(ns("kept"), lease: "l1")
                    == [LeaseResource(id: Known.helloWorldSHA256.description, type: "content")])
            #expect(try store.blobs.readAll(Known.helloWorldSHA256) == Known.helloWorld)
        }
    }

    /// `sampleContainer("c1")` with the stored timestamps, to compare every other field.
    private func sampleContainerWithTimes(_ stored: Container) -> Container {
        var expected = sampleContainer("c1")
        expected.createdAt = stored.createdAt
        expected.updatedAt = stored.updatedAt
        return expected
    }

    @Test func unopenableDatabaseIsInternal() async throws {
        try await withTemporaryDirectory(prefix: "berth-baddb") { (dir) async throws in
            let path = dir.appending("not-a-db")
            try Data(repeating: 0x42, count: 4096).write(to: URL(fileURLWithPath: path))
            let error = #expect(throws: BerthError.self) {
                _ = try MetadataStore(path: path, blobs: try BlobStore(root: dir.appending("content")))
            }
            #expect(error?.code == .internal)
            #expect(error?.message.contains(path) == true)
        }
    }
}
