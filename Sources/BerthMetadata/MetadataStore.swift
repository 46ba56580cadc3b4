import BerthContent
import BerthCore
import BerthSystem
import Foundation
import GRDB
import Synchronization

/// Berth's metadata: namespaces, images, containers, leases and which blobs each namespace sees,
/// in one SQLite database (WAL mode) beside the content store.
///
/// Every method takes its namespace explicitly. Writes run in transactions on GRDB's writer
/// queue, never on the cooperative pool; a crash leaves the last committed state.
/// Errors are `BerthError`s: `notFound`, `alreadyExists`, `invalidArgument` and
/// `failedPrecondition` as containerd's metadata store reports them.
public final class MetadataStore: Sendable {
    let pool: DatabasePool
    let readers: ReaderConnections
    /// Answers to repeated lookups, forgotten at every write (see ``ReadCache``).
    let cache = ReadCache()
    public let blobs: BlobStore
    /// The snapshotters' storage, by name (`overlayfs`, `native`).
    public let snapshotters: [String: any Snapshotter]
    /// Ids of snapshots whose Prepare is making their storage right now (rows not yet `ready`).
    /// Changed only under the database writer, so collection sees a consistent set.
    let preparingSnapshots = Mutex<Set<Int64>>([])
    /// Called after every deletion, so the owner can schedule garbage collection.
    let onDeletion: @Sendable () -> Void

    public init(path: String, blobs: BlobStore, snapshotters: [any Snapshotter] = [],
                onDeletion: @escaping @Sendable () -> Void = {}) throws(BerthError) {
        self.blobs = blobs
        self.snapshotters = Dictionary(snapshotters.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        self.onDeletion = onDeletion
        do {
            var configuration = Configuration()
            configuration.foreignKeysEnabled = true
            configuration.busyMode = .timeout(10)
            pool = try DatabasePool(path: path, configuration: configuration)
            // FULL: a commit reported to a client survives power loss (NORMAL in WAL mode does
            // not fsync each commit, and a lost row would let GC remove its blob). Set on the
            // writer once the pool is open: GRDB switches a new pool's writer to NORMAL after
            // `prepareDatabase` has run, so setting it there has no effect.
            try pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA synchronous = FULL") }
            try Schema.migrator.migrate(pool)
            readers = ReaderConnections(path: path)
        } catch {
            throw .internal("metadata database \(path): cannot open", underlying: SendableErrorBox(error))
        }
    }

    /// The migrations applied so far, oldest first.
    public func appliedMigrations() throws -> [String] {
        try readNow { db in try Schema.migrator.appliedMigrations(db) }
    }

    public func close() throws {
        readers.closeIdle()
        try pool.close()
    }

    /// Closes the reader connections not in use and empties the writer's caches (blocks until
    /// the writer is free).
    public func releaseMemory() {
        cache.invalidate()
        readers.closeIdle()
        pool.releaseMemory()
    }

    // MARK: Transactions

    /// A write transaction.
    ///
    /// On one of Berth's own threads (a connection's, where most calls' handlers run) the
    /// transaction runs right there, waiting for the writer if need be: a write takes well under a
    /// millisecond, less than GRDB's hop to its writer's queue and back. Elsewhere (Swift's
    /// cooperative pool, which must not block) it hops.
    ///
    /// `synced: false` skips the fsync of this commit: the next synced commit makes it durable
    /// with everything before it (one fsync of the WAL covers all of it). For changes whose loss
    /// in a power cut harms nobody: a step of a call that a synced commit of the same call
    /// completes (recovery undoes the step if the cut takes it alone), lease changes (see the
    /// leases extension) and a new ingest's record. Files are removed only after synced commits.
    func write<T: Sendable>(synced: Bool = true, _ body: @escaping @Sendable (Database) throws -> T) async throws(BerthError) -> T {
        if isOwnThread {
            guard !Task.isCancelled else { throw BerthError(.cancelled, "metadata database: write cancelled") }
            return try writeNow(synced: synced, body)
        }
        defer { cache.invalidate() }
        do {
            return try await pool.writeWithoutTransaction { db in try Self.writeTransaction(db, synced: synced, body) }
        } catch { throw Self.convert(error) }
    }

    /// Holds the writer without opening a transaction, for work that must follow a commit
    /// before any other write may start.
    func writeWithoutTransaction<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws(BerthError) -> T {
        defer { cache.invalidate() }
        do { return try await pool.writeWithoutTransaction(body) } catch { throw Self.convert(error) }
    }

    /// A write transaction run on the calling thread, for callers already off the cooperative
    /// pool; unlike ``write(_:)`` it does not give up when the calling task is cancelled, so it
    /// suits clean-up.
    func writeNow<T>(synced: Bool = true, _ body: (Database) throws -> T) throws(BerthError) -> T {
        defer { cache.invalidate() }
        do {
            return try pool.writeWithoutTransaction { db in try Self.writeTransaction(db, synced: synced, body) }
        } catch { throw Self.convert(error) }
    }

    /// A write transaction on the writer connection, whose commit is fsynced unless `synced` is
    /// false (then the connection is back to `synchronous = FULL` before this returns).
    private static func writeTransaction<T>(_ db: Database, synced: Bool, _ body: (Database) throws -> T) throws -> T {
        guard !synced else { return try transaction(db, "BEGIN IMMEDIATE", body) }
        try db.cachedStatement(sql: "PRAGMA synchronous = NORMAL").execute()
        let result = Result { try transaction(db, "BEGIN IMMEDIATE", body) }
        try db.cachedStatement(sql: "PRAGMA synchronous = FULL").execute()
        return try result.get()
    }

    /// `body` between `begin` and `COMMIT` (`ROLLBACK` when it throws), with cached statements:
    /// GRDB's own transactions prepare their `BEGIN` anew each time and track savepoints and
    /// observers this store does not use, which cost more than a small write's statements.
    static func transaction<T>(_ db: Database, _ begin: String, _ body: (Database) throws -> T) throws -> T {
        try db.cachedStatement(sql: begin).execute()
        do {
            let result = try body(db)
            try db.cachedStatement(sql: "COMMIT").execute()
            return result
        } catch {
            if db.isInsideTransaction { try? db.cachedStatement(sql: "ROLLBACK").execute() }
            throw error
        }
    }

    /// A read, run on the calling thread.
    ///
    /// Reads take microseconds and a reader connection is held only while `body` runs, never
    /// across a suspension, so waiting for one is short and cannot deadlock. GRDB's async `read`
    /// would instead hop to the reader's dispatch queue and back, two thread switches for every
    /// `Content/Info` or `Containers/Get`, which cost more than the read itself.
    func read<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws(BerthError) -> T {
        do { return try readNow(body) } catch { throw Self.convert(error) }
    }

    func readNow<T>(_ body: (Database) throws -> T) throws -> T {
        try readers.read(body)
    }

    /// A read whose answer is kept until the next write (see ``ReadCache``).
    func cachedRead<T: Sendable>(_ key: ReadCache.Key, _ body: (Database) throws -> T) throws(BerthError) -> T {
        do {
            return try cache.value(key) { () throws -> T in try readNow(body) }
        } catch { throw Self.convert(error) }
    }

    static func convert(_ error: any Error) -> BerthError {
        BerthError.wrap(error, "metadata database")
    }

    static func ensureNamespace(_ db: Database, _ namespace: Namespace) throws {
        let now = Timestamp.now.nanosecondsSinceEpoch
        try db.cachedStatement(sql: "INSERT OR IGNORE INTO namespaces (name, labels, created_at, updated_at) VALUES (?, '{}', ?, ?)").execute(
                       arguments: [namespace.name, now, now])
    }
}

// MARK: Column codecs

enum Codec {
    private static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }()

    /// Labels as a JSON object with sorted keys, written without Foundation (every container,
    /// snapshot and content row a run writes has some).
    static func encode(_ labels: [String: String]) -> String {
        guard !labels.isEmpty else { return "{}" }
        var out = "{"
        for (index, key) in labels.keys.sorted().enumerated() {
            if index > 0 { out += "," }
            out += JSONValue.quote(key) + ":" + JSONValue.quote(labels[key]!)
        }
        return out + "}"
    }

    static func labels(_ text: String?) -> [String: String] {
        guard let text, text != "{}" else { return [:] }
        // The columns hold what `encode` wrote: an object of strings, read without Foundation.
        if let object = (try? JSONValue(parsing: text))?.objectValue {
            var labels: [String: String] = [:]
            labels.reserveCapacity(object.count)
            for (key, value) in object {
                guard let string = value.stringValue else { return [:] }
                labels[key] = string
            }
            return labels
        }
        return [:]
    }

    static func encode(_ extensions: [String: TypedValue]) -> String {
        guard !extensions.isEmpty, let data = try? encoder.encode(extensions) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }

    static func extensions(_ text: String?) -> [String: TypedValue] {
        guard let text, text != "{}" else { return [:] }
        return (try? JSONDecoder().decode([String: TypedValue].self, from: Data(text.utf8))) ?? [:]
    }

    static func time(_ row: Row, _ column: String) -> Timestamp {
        Timestamp(nanosecondsSinceEpoch: row[column] as Int64? ?? 0)
    }
}

/// Updates the labels of an object whose only mutable field is its labels: no `paths` replaces
/// them all, else each path must be `labels` or `labels.<key>` (`invalidArgument` naming
/// `object` otherwise); the result is validated.
func updateLabels(_ labels: inout [String: String], with updated: [String: String], paths: [String],
                  object: @autoclosure () -> String) throws(BerthError) {
    if paths.isEmpty {
        labels = updated
    } else {
        for path in paths where !applyMapPath(path, prefix: "labels", from: updated, to: &labels) {
            throw .invalidArgument("\(object()): cannot update \(quoted(path)) field")
        }
    }
    try Labels.validate(labels)
}

/// Applies containerd's update field paths (`labels`, `labels.<key>`, ...) to a label map.
/// Returns false if `path` is not about labels of the given `prefix`.
func applyMapPath(_ path: String, prefix: String, from updated: [String: String], to current: inout [String: String]) -> Bool {
    if path == prefix {
        current = updated
        return true
    }
    guard path.hasPrefix(prefix + ".") else { return false }
    let key = String(path.dropFirst(prefix.count + 1))
    if let value = updated[key] { current[key] = value } else { current.removeValue(forKey: key) }
    return true
}
