import BerthContent
import BerthCore
import BerthSystem
import Foundation
import GRDB

extension MetadataStore {
    static func contentInfo(from row: Row) throws -> ContentInfo {
        ContentInfo(digest: try Digest(parsing: row["digest"]), size: row["size"],
                    createdAt: Codec.time(row, "created_at"), updatedAt: Codec.time(row, "updated_at"),
                    labels: Codec.labels(row["labels"]))
    }

    /// The blob's row in a namespace; `notFound` if the namespace does not see it.
    static func contentRow(_ db: Database, _ namespace: Namespace, digest: Digest) throws -> Row {
        guard let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM content WHERE namespace = ? AND digest = ?"),
                                         arguments: [namespace.name, digest.description]) else {
            throw BerthError.notFound("content digest \(digest): not found")
        }
        return row
    }

    public func contentInfo(_ namespace: Namespace, digest: Digest) async throws(BerthError) -> ContentInfo {
        try contentInfoNow(namespace, digest: digest)
    }

    private func contentInfoNow(_ namespace: Namespace, digest: Digest) throws(BerthError) -> ContentInfo {
        try cachedRead(.content(namespace: namespace.name, digest: digest.description)) { db in
            try Self.contentInfo(from: Self.contentRow(db, namespace, digest: digest))
        }
    }

    /// The size of a blob the namespace sees, read synchronously: for callers already off the
    /// cooperative pool (a `Content/Read` does its lookup and first read in one blocking hop).
    public func contentSize(_ namespace: Namespace, digest: Digest) throws(BerthError) -> Int64 {
        try contentInfoNow(namespace, digest: digest).size
    }

    public func contents(_ namespace: Namespace, filter: Filter) async throws(BerthError) -> [ContentInfo] {
        try await read { db in
            try Row.fetchAll(db.cachedStatement(sql: "SELECT * FROM content WHERE namespace = ? ORDER BY digest"), arguments: [namespace.name])
                .map(Self.contentInfo(from:)).filter(filter.matches)
        }
    }

    /// Updates a blob's labels in one namespace (paths `labels`, `labels.<key>`; none replaces all).
    public func updateContent(_ namespace: Namespace, digest: Digest, labels updated: [String: String], paths: [String]) async throws(BerthError) -> ContentInfo {
        try await write { db in
            var info = try Self.contentInfo(from: Self.contentRow(db, namespace, digest: digest))
            try updateLabels(&info.labels, with: updated, paths: paths, object: "content \(digest)")
            info.updatedAt = .now
            try db.cachedStatement(sql: "UPDATE content SET labels = ?, updated_at = ? WHERE namespace = ? AND digest = ?").execute(
                           arguments: [Codec.encode(info.labels), info.updatedAt.nanosecondsSinceEpoch, namespace.name, digest.description])
            return info
        }
    }

    /// Removes a blob from a namespace; garbage collection removes the bytes once no namespace
    /// names them.
    public func deleteContent(_ namespace: Namespace, digest: Digest) async throws(BerthError) {
        try await write { db in
            try db.cachedStatement(sql: "DELETE FROM content WHERE namespace = ? AND digest = ?").execute(arguments: [namespace.name, digest.description])
            if db.changesCount == 0 { throw BerthError.notFound("content digest \(digest): not found") }
        }
        onDeletion()
    }

    // MARK: Ingests

    /// Opens a writer for `ref` in `namespace`, resuming earlier data under the same ref.
    ///
    /// - `alreadyExists` if `expected` is already visible in the namespace, or is on disk from
    ///   another namespace (it is then shared into this one, as containerd's shared policy does).
    /// - `unavailable` if another writer holds `ref`.
    /// - `notFound` if `lease` does not exist.
    public func openWriter(_ namespace: Namespace, ref: String, lease: String?, total: Int64,
                           expected: Digest?) async throws(BerthError) -> ContentWriter {
        guard !ref.isEmpty else { throw .invalidArgument("ref must not be empty") }
        if let expected {
            try await shareIfPresent(namespace, digest: expected, size: total, lease: lease)
        }
        let key = BlobStore.ingestKey(namespace: namespace.name, ref: ref)
        // Not synced: an ingest is work in progress, like a lease. Its commit (synced) makes the
        // record durable with the blob; a power cut before that leaves at worst a record whose
        // files are gone or files without a record, which collection already handles (a crash
        // between the record and its files leaves the same).
        try await write(synced: false) { db in
            try Self.ensureNamespace(db, namespace)
            // A resumed ingest keeps its record; a newly declared expected digest replaces the old.
            try db.cachedStatement(sql: """
                INSERT INTO ingests (namespace, ref, key, expected, created_at) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT(namespace, ref) DO UPDATE SET expected = COALESCE(excluded.expected, ingests.expected)
                """).execute(arguments: [namespace.name, ref, key, expected?.description, Timestamp.now.nanosecondsSinceEpoch])
            if let lease {
                try Self.addLeaseResource(db, namespace, lease: lease, LeaseResource(id: ref, type: "ingests"))
            }
        }
        let blobs = self.blobs
        // A ref still held by a writer that is just closing (a client that reconnects at once)
        // gets a few short, growing waits before UNAVAILABLE, as containerd's local store gives.
        var attempt = 0
        let writer: IngestWriter
        while true {
            do {
                writer = try await runBlocking { () throws(BerthError) in
                    try blobs.openIngest(key: key, ref: ref, total: total)
                }
                break
            } catch where error.code == .unavailable && attempt < 9 {
                try? await Task.sleep(for: .milliseconds(Int.random(in: 0..<(1 << attempt)) + 1))
                attempt += 1
            }
        }
        return ContentWriter(store: self, namespace: namespace, lease: lease, writer: writer, expected: expected)
    }

    /// Throws `alreadyExists` if the namespace holds `digest`, first sharing a blob that is on
    /// disk for another namespace into this one.
    func shareIfPresent(_ namespace: Namespace, digest: Digest, size: Int64, lease: String?) async throws(BerthError) {
        let blobs = self.blobs
        // Decided and recorded inside one write transaction, so garbage collection cannot remove
        // the blob between this check and the row that makes it visible. The error is thrown
        // after the transaction commits: throwing inside would roll the shared row back.
        let present = try await write { db -> Bool in
            if try Bool.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM content WHERE namespace = ? AND digest = ?"),
                                 arguments: [namespace.name, digest.description]) == true {
                if let lease {
                    try Self.addLeaseResource(db, namespace, lease: lease, LeaseResource(id: digest.description, type: "content"))
                }
                return true
            }
            guard let onDisk = blobs.stat(digest), size <= 0 || onDisk.size == size else { return false }
            try Self.ensureNamespace(db, namespace)
            try Self.insertContent(db, namespace, digest: digest, size: onDisk.size, labels: [:], lease: lease)
            return true
        }
        if present { throw .alreadyExists("content \(digest): already exists") }
    }

    static func insertContent(_ db: Database, _ namespace: Namespace, digest: Digest, size: Int64,
                              labels: [String: String], lease: String?) throws {
        let now = Timestamp.now.nanosecondsSinceEpoch
        try db.cachedStatement(sql: "INSERT INTO content (namespace, digest, size, labels, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)").execute(
                       arguments: [namespace.name, digest.description, size, Codec.encode(labels), now, now])
        if let lease {
            try addLeaseResource(db, namespace, lease: lease, LeaseResource(id: digest.description, type: "content"))
        }
    }

    /// Installs a verified ingest and makes it visible in `namespace`, in one transaction.
    func commit(_ verified: VerifiedIngest, namespace: Namespace, ref: String, labels: [String: String], lease: String?) async throws(BerthError) {
        try Labels.validate(labels)
        let blobs = self.blobs
        let existed = try await write { db -> Bool in
            try db.cachedStatement(sql: "DELETE FROM ingests WHERE namespace = ? AND ref = ?").execute(arguments: [namespace.name, ref])
            if let lease {
                try db.cachedStatement(sql: "DELETE FROM lease_resources WHERE namespace = ? AND lease = ? AND type = 'ingests' AND id = ?").execute(
                               arguments: [namespace.name, lease, ref])
            }
            if try Bool.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM content WHERE namespace = ? AND digest = ?"),
                                 arguments: [namespace.name, verified.digest.description]) == true {
                try? blobs.discardIngest(key: verified.key)
                // Still held by this writer's lease, so a pull protects every blob it touched.
                if let lease {
                    try Self.addLeaseResource(db, namespace, lease: lease, LeaseResource(id: verified.digest.description, type: "content"))
                }
                return true
            }
            _ = try blobs.install(verified)
            try Self.ensureNamespace(db, namespace)
            try Self.insertContent(db, namespace, digest: verified.digest, size: verified.size, labels: labels, lease: lease)
            return false
        }
        if existed { throw .alreadyExists("content \(verified.digest): already exists") }
    }

    public func ingestStatus(_ namespace: Namespace, ref: String) async throws(BerthError) -> IngestStatus {
        guard let status = try await ingestStatuses(namespace, where: "ref = ?", [ref]).first else {
            throw .notFound("ingest ref \(quoted(ref)): not found")
        }
        return status
    }

    /// Ingests of a namespace, filtered on `ref`.
    public func ingestStatuses(_ namespace: Namespace, filter: Filter) async throws(BerthError) -> [IngestStatus] {
        try await ingestStatuses(namespace, where: "1", []).filter { filter.matches(IngestRef(ref: $0.ref)) }
    }

    /// Ingests recorded for a namespace that still have data, with the digests their writers declared.
    private func ingestStatuses(_ namespace: Namespace, where condition: String, _ arguments: [String]) async throws(BerthError) -> [IngestStatus] {
        let rows = try await read { db in
            try Row.fetchAll(db, sql: "SELECT ref, key, expected FROM ingests WHERE namespace = ? AND \(condition) ORDER BY ref",
                             arguments: StatementArguments([namespace.name] + arguments))
                .map { (ref: $0["ref"] as String, key: $0["key"] as String, expected: $0["expected"] as String?) }
        }
        return rows.compactMap { row in
            guard var status = blobs.ingestStatus(key: row.key) else { return nil }
            status.ref = row.ref
            status.expected = row.expected.flatMap { try? Digest(parsing: $0) }
            return status
        }
    }

    /// Drops an ingest and its data; `notFound` if the namespace has none under `ref`.
    public func abortIngest(_ namespace: Namespace, ref: String) async throws(BerthError) {
        let key = BlobStore.ingestKey(namespace: namespace.name, ref: ref)
        let blobs = self.blobs
        try await write { db in
            let hadData = blobs.ingestStatus(key: key) != nil
            try blobs.discardIdleIngest(key: key, ref: ref)  // `unavailable` while written; nothing changed yet
            try db.cachedStatement(sql: "DELETE FROM ingests WHERE namespace = ? AND ref = ?").execute(arguments: [namespace.name, ref])
            let hadRow = db.changesCount > 0
            try db.cachedStatement(sql: "DELETE FROM lease_resources WHERE namespace = ? AND type = 'ingests' AND id = ?").execute(arguments: [namespace.name, ref])
            if !hadRow && !hadData { throw BerthError.notFound("ingest ref \(quoted(ref)): not found") }
        }
    }
}

struct IngestRef: Filterable {
    let ref: String
    func field(_ path: [String]) -> String? { path == ["ref"] ? ref : nil }
}

/// One client's write into the content store: an ingest plus where its blob goes when committed.
/// Used by one stream at a time; ``close()`` releases the ingest's lock and keeps its data.
public final class ContentWriter: @unchecked Sendable {
    let store: MetadataStore
    public let namespace: Namespace
    public let lease: String?
    let writer: IngestWriter
    public private(set) var expected: Digest?

    init(store: MetadataStore, namespace: Namespace, lease: String?, writer: IngestWriter, expected: Digest?) {
        self.store = store
        self.namespace = namespace
        self.lease = lease
        self.writer = writer
        self.expected = expected
    }

    public var ref: String { writer.ref }
    public var offset: Int64 { writer.offset }
    public var total: Int64 { writer.total }
    public var status: IngestStatus { writer.status }
    public var digest: Digest { writer.digest }

    /// Records a newly declared expected digest and fails with `alreadyExists` (dropping this
    /// ingest) if the namespace can already see it.
    public func expect(_ digest: Digest) async throws(BerthError) {
        expected = digest
        do {
            try await store.shareIfPresent(namespace, digest: digest, size: 0, lease: lease)
        } catch let error where error.code == .alreadyExists {
            writer.close()
            try? await store.abortIngest(namespace, ref: writer.ref)
            throw error
        }
    }

    public func setTotal(_ total: Int64) async throws(BerthError) {
        guard total > 0, total != writer.total else { return }
        let writer = self.writer
        try await runBlocking { () throws(BerthError) in try writer.setTotal(total) }  // records it with fsyncs
    }

    public func write(_ bytes: [UInt8]) async throws(BerthError) {
        let writer = self.writer
        try await runBlocking { () throws(BerthError) in try writer.write(bytes) }
    }

    public func truncate() async throws(BerthError) {
        let writer = self.writer
        try await runBlocking { () throws(BerthError) in try writer.truncate() }
    }

    /// Verifies size and digest, then stores the blob and makes it visible in the namespace.
    public func commit(size: Int64, expected: Digest?, labels: [String: String]) async throws(BerthError) {
        let writer = self.writer
        let verified = try await runBlocking { () throws(BerthError) in
            try writer.verify(size: size, expected: expected ?? self.expected)
        }
        defer { writer.close() }
        try await store.commit(verified, namespace: namespace, ref: writer.ref, labels: labels, lease: lease)
    }

    public func close() { writer.close() }
}
