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
/// (`containerd.io/gc.expire`); content labelled `containerd.io/gc.root`; content named by
/// containers' `containerd.io/gc.ref.content*` labels. From a root, collection follows
/// `containerd.io/gc.ref.content*` labels and the descriptors inside indexes and manifests.
/// Everything else is swept: the namespace's content row, then the blob once no namespace
/// names it. Expired leases are deleted. An ingest being written is never touched.
///
/// Mark and sweep run inside one write transaction, so no commit can make a blob visible while
/// collection decides about it.
public final class GarbageCollector: Sendable {
    public struct Result: Sendable, Equatable {
        public var contentRowsRemoved = 0
        public var blobsRemoved = 0
        public var leasesExpired = 0
        public var ingestsRemoved = 0
    }

    let store: MetadataStore
    let logger: Logger
    private let pending = Mutex<Bool>(false)

    public init(store: MetadataStore, logger: Logger) {
        self.store = store
        self.logger = logger
    }

    /// Asks for a collection soon; requests that arrive while one is pending share it.
    public func schedule(after delay: Duration = .milliseconds(50)) {
        let alreadyPending = pending.withLock { pending -> Bool in
            defer { pending = true }
            return pending
        }
        guard !alreadyPending else { return }
        Task {
            try? await Task.sleep(for: delay)
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
        let start = ContinuousClock.now
        // Rows go first, in one transaction; files go only after it commits, while this
        // collection still holds the database's writer, so no commit or share can interleave.
        // A crash or a failed commit therefore never leaves a row whose blob is gone.
        let result = try await store.writeWithoutTransaction { db in
            var result = Result()
            var doomedBlobs: [Digest] = []
            var doomedIngests: [String] = []
            try db.inTransaction {
                result.leasesExpired = try Self.deleteExpiredLeases(db)
                let marked = try Self.mark(db, blobs: blobs)
                // Sweep content rows namespace by namespace.
                for row in try Row.fetchAll(db, sql: "SELECT namespace, digest FROM content") {
                    let key = ContentKey(namespace: row["namespace"], digest: row["digest"])
                    if !marked.contains(key) {
                        try db.execute(sql: "DELETE FROM content WHERE namespace = ? AND digest = ?", arguments: [key.namespace, key.digest])
                        result.contentRowsRemoved += 1
                    }
                }
                // Then blobs no namespace names any more.
                let named = Set(try String.fetchAll(db, sql: "SELECT DISTINCT digest FROM content"))
                doomedBlobs = blobs.allBlobs().filter { !named.contains($0.description) }
                try Self.expireIngests(db, blobs: blobs)
                // Ingest directories without a record: expired above, or left by a crash before
                // their record was written.
                let keys = Set(try String.fetchAll(db, sql: "SELECT key FROM ingests"))
                doomedIngests = blobs.ingestKeys().filter { !keys.contains($0) }
                return .commit
            }
            for digest in doomedBlobs where (try? blobs.delete(digest)) != nil {
                result.blobsRemoved += 1
            }
            for key in doomedIngests where (try? blobs.discardIdleIngest(key: key, ref: key)) != nil {
                result.ingestsRemoved += 1
            }
            return result
        }
        Memory.releaseFreePages()
        if result != Result() {
            logger.info("garbage collected", metadata: [
                "content": "\(result.contentRowsRemoved)", "blobs": "\(result.blobsRemoved)",
                "leases": "\(result.leasesExpired)", "ingests": "\(result.ingestsRemoved)",
                "duration": "\(ContinuousClock.now - start)",
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
        for row in try Row.fetchAll(db, sql: "SELECT namespace, id FROM lease_resources WHERE type = 'ingests'") {
            leased.insert("\(row["namespace"] as String)/\(row["id"] as String)")
        }
        let now = Timestamp.now.seconds
        for row in try Row.fetchAll(db, sql: "SELECT namespace, ref, key, created_at FROM ingests") {
            let (namespace, ref, key): (String, String, String) = (row["namespace"], row["ref"], row["key"])
            guard !blobs.isLocked(key), !leased.contains("\(namespace)/\(ref)") else { continue }
            let lastWrite = blobs.ingestStatus(key: key)?.updatedAt.seconds ?? Codec.time(row, "created_at").seconds
            guard now - lastWrite > ingestExpiry else { continue }
            try db.execute(sql: "DELETE FROM ingests WHERE namespace = ? AND ref = ?", arguments: [namespace, ref])
        }
    }

    static func deleteExpiredLeases(_ db: Database) throws -> Int {
        var expired = 0
        let now = Date()
        for row in try Row.fetchAll(db, sql: "SELECT namespace, id, labels FROM leases") {
            guard let text = Codec.labels(row["labels"])[Labels.gcExpire], let date = parseRFC3339(text), date < now else { continue }
            try db.execute(sql: "DELETE FROM leases WHERE namespace = ? AND id = ?", arguments: [row["namespace"] as String, row["id"] as String])
            expired += 1
        }
        return expired
    }

    static func mark(_ db: Database, blobs: BlobStore) throws -> Set<ContentKey> {
        var labelsByKey: [ContentKey: [String: String]] = [:]
        for row in try Row.fetchAll(db, sql: "SELECT namespace, digest, labels FROM content") {
            labelsByKey[ContentKey(namespace: row["namespace"], digest: row["digest"])] = Codec.labels(row["labels"])
        }
        var queue: [(ContentKey, String?)] = []
        for row in try Row.fetchAll(db, sql: "SELECT namespace, digest, media_type, labels FROM images") {
            queue.append((ContentKey(namespace: row["namespace"], digest: row["digest"]), row["media_type"]))
            // An image holds what its own gc.ref.content labels name, too.
            for (name, value) in Codec.labels(row["labels"]) where name.hasPrefix(Labels.gcRefContentPrefix) {
                queue.append((ContentKey(namespace: row["namespace"], digest: value), nil))
            }
        }
        for row in try Row.fetchAll(db, sql: "SELECT namespace, id FROM lease_resources WHERE type = 'content'") {
            queue.append((ContentKey(namespace: row["namespace"], digest: row["id"]), nil))
        }
        for row in try Row.fetchAll(db, sql: "SELECT namespace, labels FROM containers") {
            for (name, value) in Codec.labels(row["labels"]) where name.hasPrefix(Labels.gcRefContentPrefix) {
                queue.append((ContentKey(namespace: row["namespace"], digest: value), nil))
            }
        }
        for (key, labels) in labelsByKey where labels[Labels.gcRoot] != nil {
            queue.append((key, nil))
        }

        var marked = Set<ContentKey>()
        while let (key, mediaType) = queue.popLast() {
            guard let labels = labelsByKey[key], marked.insert(key).inserted else { continue }
            for (name, value) in labels where name.hasPrefix(Labels.gcRefContentPrefix) {
                queue.append((ContentKey(namespace: key.namespace, digest: value), nil))
            }
            for child in children(of: key.digest, mediaType: mediaType, blobs: blobs) {
                queue.append((ContentKey(namespace: key.namespace, digest: child.digest.description), child.mediaType))
            }
        }
        return marked
    }

    /// Descriptors an index or manifest refers to. Blobs of unknown type are looked into when
    /// small and JSON; anything that does not parse has no children.
    static func children(of digestText: String, mediaType: String?, blobs: BlobStore) -> [Descriptor] {
        if let mediaType, !MediaType.isIndex(mediaType), !MediaType.isManifest(mediaType) { return [] }
        guard let digest = try? Digest(parsing: digestText), let bytes = try? blobs.readAll(digest, limit: 4 << 20),
              bytes.first == UInt8(ascii: "{")
        else { return [] }
        guard let document = try? JSONDecoder().decode(ReferencingDocument.self, from: Data(bytes)) else { return [] }
        return (document.manifests ?? []) + (document.config.map { [$0] } ?? []) + (document.layers ?? [])
    }

    struct ReferencingDocument: Decodable {
        var manifests: [Descriptor]?
        var config: Descriptor?
        var layers: [Descriptor]?
    }
}

func parseRFC3339(_ text: String) -> Date? {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    if let date = formatter.date(from: text) { return date }
    formatter.formatOptions = [.withInternetDateTime]
    return formatter.date(from: text)
}
