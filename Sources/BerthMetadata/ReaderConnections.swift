import GRDB
import Synchronization

/// Read-only connections to the metadata database, kept beside GRDB's pool (whose writer does
/// every write) for the many small reads a client makes: `ctr run` alone makes about thirty.
///
/// GRDB's pool reads cost several times the query they run: choosing a reader builds a generic
/// key path on every call, and each read opens and ends its transaction through freshly
/// prepared `BEGIN` and `COMMIT` statements. Here a read takes an idle connection off a stack,
/// runs on the calling thread, and brackets the body in a deferred transaction with cached
/// statements, so every statement of one read sees the same committed state (WAL mode lets
/// it proceed while a write is in progress).
final class ReaderConnections: Sendable {
    /// Connections kept open when idle; a burst of concurrent reads opens more, closed after use.
    static let keptIdle = 4

    private let path: String
    private let idle = Mutex<[DatabaseQueue]>([])

    init(path: String) {
        self.path = path
    }

    func read<T>(_ body: (Database) throws -> T) throws -> T {
        let connection = try idle.withLock { $0.popLast() } ?? open()
        defer {
            idle.withLock { idle in
                if idle.count < Self.keptIdle { idle.append(connection) }
            }
        }
        return try connection.unsafeRead { db in try MetadataStore.transaction(db, "BEGIN DEFERRED", body) }
    }

    /// Closes the idle connections (the next read opens one again, well under a millisecond).
    func closeIdle() {
        _ = idle.withLock { idle in
            defer { idle = [] }
            return idle
        }
    }

    private func open() throws -> DatabaseQueue {
        var configuration = Configuration()
        configuration.readonly = true
        configuration.busyMode = .timeout(10)
        configuration.label = "berth.metadata.reader"
        return try DatabaseQueue(path: path, configuration: configuration)
    }
}
