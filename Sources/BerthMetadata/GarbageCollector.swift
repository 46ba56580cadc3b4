import BerthContent
import BerthCore
import BerthSystem
import Foundation
import GRDB
import Logging
import Synchronization

/// Mark-and-sweep collection of content, in the manner of containerd's.
///
/// Roots: every image's target; the resources of every lease that has not expired
/// (`containerd.io/gc.expire`); content and snapshots labelled `containerd.io/gc.root`;
/// containers' snapshots; what images' and containers' `containerd.io/gc.ref.content*` and
/// `containerd.io/gc.ref.snapshot.<snapshotter>` labels name. From a root, collection follows
/// those labels on content and snapshots, a snapshot's parent, and the descriptors inside
/// indexes and manifests. Everything else is swept: snapshots (rows, then their storage), the
/// namespace's content row, then the blob once no namespace names it. Expired leases are
/// deleted. An ingest being written and a snapshot being prepared are never touched.
///
/// Mark and sweep run inside one write transaction, so no commit can make a blob visible while
/// collection decides about it.
public final class GarbageCollector: Sendable {
    public struct Result: Sendable, Equatable {
        public var contentRowsRemoved = 0
        public var blobsRemoved = 0
        public var leasesExpired = 0
        public var ingestsRemoved = 0
        public var snapshotsRemoved = 0
    }

    let store: MetadataStore
    let logger: Logger
    private let pending = Mutex<Bool>(false)
    /// What each index or manifest refers to, by digest: a blob's bytes never change, so it is
    /// read and parsed once, not on every collection (one follows each `ctr run --rm`).
    private let references = Mutex<[String: [Descriptor]]>([:])
    /// Beyond this many, the remembered references are forgotten and read again as needed.
    static let referencesKept = 8192
    /// How long the last collection took, for spacing out the next (see ``schedule(after:)``).
    private let lastDuration = Mutex<Duration>(.zero)

    /// The share of time collection may take when deletions keep asking for it: containerd's
    /// scheduler default (`pause_threshold = 0.02`).
    public static let pauseThreshold = 0.02
    /// The longest a deletion waits for its collection however slow the last one was, so that
    /// space comes back within a second.
    public static let maximumSpacing: Duration = .seconds(1)

    public init(store: MetadataStore, logger: Logger) {
        self.store = store
        self.logger = logger
    }

    /// Asks for a collection soon; requests that arrive while one is pending share it.
    ///
    /// Soon is `delay`, or longer when the last collection was slow: it waits until that one
    /// amounts to at most ``pauseThreshold`` of the time, so a stream of deletions (every
    /// `ctr run --rm` deletes a lease, a snapshot and a container) costs a bounded share of
    /// the daemon's CPU and database writer, as containerd bounds it; never longer than
    /// ``maximumSpacing``.
    public func schedule(after delay: Duration = .milliseconds(50)) {
        let alreadyPending = pending.withLock { pending -> Bool in
            defer { pending = true }
            return pending
        }
        guard !alreadyPending else { return }
        let spacing = min(lastDuration.withLock { $0 } * (1 / Self.pauseThreshold - 1), Self.maximumSpacing)
        Task {
            try? await Task.sleep(for: max(delay, spacing))
            pending.withLock { $0 = false }
            do { _ = try await collect() } catch {
                logger.error("garbage collection failed", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Collects now and returns what was removed.
    @discardableResult
    public func collect() async throws(BerthError) -> Result {
        let blobs = store.blobs
        let snapshotters = Array(store.snapshotters.values)
        // Rows go first, in one transaction; files go only after it commits, while this
        // collection still holds the database's writer, so no commit or share can interleave.
        // A crash or a failed commit therefore never leaves a row whose blob is gone.
        let (result, doomedStorage, duration) = try await store.writeWithoutTransaction { db in
            // Timed from here: the spacing bounds the share of the writer collection holds,
            // not the wait for it (which a busy daemon would otherwise feed back as spacing).
            let start = ContinuousClock.now
            var result = Result()
            var doomedBlobs: [Digest] = []
            var doomedIngests: [String] = []
            var doomedSnapshots: [MetadataStore.SendableStorage] = []
            try db.inTransaction {
                result.leasesExpired = try Self.deleteExpiredLeases(db)
                let preparing = self.store.preparingSnapshots.withLock { $0 }
                let marked = try Self.mark(db, preparing: preparing) { digest, mediaType in
                    self.children(of: digest, mediaType: mediaType, blobs: blobs)
                }
                // Snapshots no one keeps; their storage goes after the commit. An unkept
                // snapshot's children are unkept too, so no kept row loses its parent.
                // A row left not ready by a Prepare that is no longer running (a cancelled call
                // whose clean-up failed) is garbage too.
                for row in try Row.fetchAll(db.cachedStatement(sql: "SELECT id, namespace, snapshotter, key FROM snapshots")) {
                    let key = SnapshotKey(namespace: row["namespace"], snapshotter: row["snapshotter"], key: row["key"])
                    guard !marked.snapshots.contains(key), !preparing.contains(row["id"]) else { continue }
                    try db.cachedStatement(sql: "DELETE FROM snapshots WHERE id = ?").execute(arguments: [row["id"] as Int64])
                    result.snapshotsRemoved += 1
                }
                doomedSnapshots = try MetadataStore.orphanedStorage(db, snapshotters).map(MetadataStore.SendableStorage.init)
                // Sweep content rows namespace by namespace.
                for row in try Row.fetchAll(db.cachedStatement(sql: "SELECT namespace, digest FROM content")) {
                    let key = ContentKey(namespace: row["namespace"], digest: row["digest"])
                    if !marked.content.contains(key) {
                        try db.cachedStatement(sql: "DELETE FROM content WHERE namespace = ? AND digest = ?").execute(arguments: [key.namespace, key.digest])
                        result.contentRowsRemoved += 1
                    }
                }
                // Then blobs no namespace names any more.
                let named = Set(try String.fetchAll(db.cachedStatement(sql: "SELECT DISTINCT digest FROM content")))
                doomedBlobs = blobs.allBlobs().filter { !named.contains($0.description) }
                try Self.expireIngests(db, blobs: blobs)
                // Ingest directories without a record: expired above, or left by a crash before
                // their record was written.
                let keys = Set(try String.fetchAll(db.cachedStatement(sql: "SELECT key FROM ingests")))
                doomedIngests = blobs.ingestKeys().filter { !keys.contains($0) }
                return .commit
            }
            for digest in doomedBlobs where (try? blobs.delete(digest)) != nil {
                result.blobsRemoved += 1
            }
            for key in doomedIngests where (try? blobs.discardIdleIngest(key: key, ref: key)) != nil {
                result.ingestsRemoved += 1
            }
            return (result, doomedSnapshots, ContinuousClock.now - start)
        }
        // Snapshot ids are never reused, so their storage can go without holding the writer;
        // removing large trees would otherwise stall every Prepare and commit meanwhile.
        await MetadataStore.removeStorage(doomedStorage.map { ($0.snapshotter, $0.id) })
        Memory.releaseFreePages()
        lastDuration.withLock { $0 = duration }
        if result != Result() {
            logger.info("garbage collected", metadata: [
                "content": "\(result.contentRowsRemoved)", "blobs": "\(result.blobsRemoved)",
                "leases": "\(result.leasesExpired)", "ingests": "\(result.ingestsRemoved)", "snapshots": "\(result.snapshotsRemoved)",
                "duration": "\(duration)",
            ])
        }
        return result
    }

    struct ContentKey: Hashable {
        let namespace: String
        let digest: String
    }

    /// How long an interrupted ingest that no lease holds is kept for a client to resume, as
    /// containerd keeps one (its `expireat`).
    static let ingestExpiry: Int64 = 24 * 3600

    /// Drops the records of ingests that no writer holds, no lease holds, and nobody wrote to for
    /// ``ingestExpiry``. Their directories go once the transaction has committed.
    static func expireIngests(_ db: Database, blobs: BlobStore) throws {
        var leased = Set<String>()
        for row in try Row.fetchAll(db.cachedStatement(sql: "SELECT namespace, id FROM lease_resources WHERE type = 'ingests'")) {
            leased.insert("\(row["namespace"] as String)/\(row["id"] as String)")
        }
        let now = Timestamp.now.seconds
        for row in try Row.fetchAll(db.cachedStatement(sql: "SELECT namespace, ref, key, created_at FROM ingests")) {
            let (namespace, ref, key): (String, String, String) = (row["namespace"], row["ref"], row["key"])
            guard !blobs.isLocked(key), !leased.contains("\(namespace)/\(ref)") else { continue }
            let lastWrite = blobs.ingestStatus(key: key)?.updatedAt.seconds ?? Codec.time(row, "created_at").seconds
            guard now - lastWrite > ingestExpiry else { continue }
            try db.cachedStatement(sql: "DELETE FROM ingests WHERE namespace = ? AND ref = ?").execute(arguments: [namespace, ref])
        }
    }

    static func deleteExpiredLeases(_ db: Database) throws -> Int {
        var expired = 0
        let now = Timestamp.now
        for row in try Row.fetchAll(db.cachedStatement(sql: "SELECT namespace, id, labels FROM leases")) {
            guard let text = Codec.labels(row["labels"])[Labels.gcExpire], let expiry = Timestamp(rfc3339: text), expiry < now else { continue }
            try db.cachedStatement(sql: "DELETE FROM leases WHERE namespace = ? AND id = ?").execute(arguments: [row["namespace"] as String, row["id"] as String])
            expired += 1
        }
        return expired
    }

    /// An object collection can keep: a blob in a namespace, or a snapshot.
    enum Node: Hashable {
        case content(ContentKey)
        case snapshot(SnapshotKey)
    }

    struct SnapshotKey: Hashable {
        let namespace: String
        let snapshotter: String
        let key: String
    }

    /// The nodes a label map refers to: `containerd.io/gc.ref.content*` and
    /// `containerd.io/gc.ref.snapshot.<snapshotter>[/...]`.
    static func references(in labels: [String: String], namespace: String) -> [Node] {
        var nodes: [Node] = []
        for (name, value) in labels {
            if name.hasPrefix(Labels.gcRefContentPrefix) {
                nodes.append(.content(ContentKey(namespace: namespace, digest: value)))
            } else if name.hasPrefix(Labels.gcRefSnapshotPrefix) {
                let snapshotter = name.dropFirst(Labels.gcRefSnapshotPrefix.count).split(separator: "/", maxSplits: 1).first.map(String.init) ?? ""
                nodes.append(.snapshot(SnapshotKey(namespace: namespace, snapshotter: snapshotter, key: value)))
            }
        }
        return nodes
    }

    struct Marked {
        var content = Set<ContentKey>()
        var snapshots = Set<SnapshotKey>()
    }

    static func mark(_ db: Database, preparing: Set<Int64>,
                     children: (_ digest: String, _ mediaType: String?) -> [Descriptor]) throws -> Marked {
        var contentLabels: [ContentKey: [String: String]] = [:]
        for row in try Row.fetchAll(db.cachedStatement(sql: "SELECT namespace, digest, labels FROM content")) {
            contentLabels[ContentKey(namespace: row["namespace"], digest: row["digest"])] = Codec.labels(row["labels"])
        }
        struct SnapshotEdges { var parent: String?; var labels: [String: String] }
        var snapshotEdges: [SnapshotKey: SnapshotEdges] = [:]
        var queue: [(Node, String?)] = []
        for row in try Row.fetchAll(db.cachedStatement(sql: """
            SELECT s.id, s.namespace, s.snapshotter, s.key, s.labels, p.key AS parent_key
            FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id
            """)) {
            let key = SnapshotKey(namespace: row["namespace"], snapshotter: row["snapshotter"], key: row["key"])
            let labels = Codec.labels(row["labels"])
            snapshotEdges[key] = SnapshotEdges(parent: row["parent_key"], labels: labels)
            // A snapshot still being prepared is in use by its Prepare; gc.root keeps any other.
            if preparing.contains(row["id"]) || labels[Labels.gcRoot] != nil { queue.append((.snapshot(key), nil)) }
        }
        for row in try Row.fetchAll(db.cachedStatement(sql: "SELECT namespace, digest, media_type, labels FROM images")) {
            queue.append((.content(ContentKey(namespace: row["namespace"], digest: row["digest"])), row["media_type"]))
            // An image holds what its own gc.ref labels name, too.
            queue += references(in: Codec.labels(row["labels"]), namespace: row["namespace"]).map { ($0, nil) }
        }
        for row in try Row.fetchAll(db.cachedStatement(sql: "SELECT namespace, type, id FROM lease_resources")) {
            let type: String = row["type"]
            if type == "content" {
                queue.append((.content(ContentKey(namespace: row["namespace"], digest: row["id"])), nil))
            } else if type.hasPrefix("snapshots/") {
                queue.append((.snapshot(SnapshotKey(namespace: row["namespace"], snapshotter: String(type.dropFirst(10)), key: row["id"])), nil))
            }
        }
        for row in try Row.fetchAll(db.cachedStatement(sql: "SELECT namespace, labels, snapshotter, snapshot_key FROM containers")) {
            queue += references(in: Codec.labels(row["labels"]), namespace: row["namespace"]).map { ($0, nil) }
            let (snapshotter, key): (String, String) = (row["snapshotter"], row["snapshot_key"])
            if !snapshotter.isEmpty, !key.isEmpty {
                queue.append((.snapshot(SnapshotKey(namespace: row["namespace"], snapshotter: snapshotter, key: key)), nil))
            }
        }
        for (key, labels) in contentLabels where labels[Labels.gcRoot] != nil {
            queue.append((.content(key), nil))
        }

        var marked = Marked()
        while let (node, mediaType) = queue.popLast() {
            switch node {
            case .content(let key):
                guard let labels = contentLabels[key], marked.content.insert(key).inserted else { continue }
                queue += references(in: labels, namespace: key.namespace).map { ($0, nil) }
                for child in children(key.digest, mediaType) {
                    queue.append((.content(ContentKey(namespace: key.namespace, digest: child.digest.description)), child.mediaType))
                }
            case .snapshot(let key):
                guard let edges = snapshotEdges[key], marked.snapshots.insert(key).inserted else { continue }
                if let parent = edges.parent {
                    queue.append((.snapshot(SnapshotKey(namespace: key.namespace, snapshotter: key.snapshotter, key: parent)), nil))
                }
                queue += references(in: edges.labels, namespace: key.namespace).map { ($0, nil) }
            }
        }
        return marked
    }

    /// Descriptors an index or manifest refers to. Blobs of unknown type are looked into when
    /// small and JSON; anything that does not parse has no children. What a blob that could be
    /// read says is remembered (a missing blob may still arrive, so its absence is not).
    func children(of digestText: String, mediaType: String?, blobs: BlobStore) -> [Descriptor] {
        if let mediaType, !MediaType.isIndex(mediaType), !MediaType.isManifest(mediaType) { return [] }
        if let known = references.withLock({ $0[digestText] }) { return known }
        guard let digest = try? Digest(parsing: digestText), let bytes = try? blobs.readAll(digest, limit: 4 << 20) else { return [] }
        var found: [Descriptor] = []
        if bytes.first == UInt8(ascii: "{"), let document = try? JSONDecoder().decode(ReferencingDocument.self, from: Data(bytes)) {
            found = (document.manifests ?? []) + (document.config.map { [$0] } ?? []) + (document.layers ?? [])
        }
        references.withLock { references in
            if references.count >= Self.referencesKept { references.removeAll() }
            references[digestText] = found
        }
        return found
    }

    struct ReferencingDocument: Decodable {
        var manifests: [Descriptor]?
        var config: Descriptor?
        var layers: [Descriptor]?
    }
}
