import Synchronization

/// The last answers to the lookups clients repeat between writes, dropped by every write.
///
/// `ctr run` asks for the same two or three blobs' info and bytes ten times each, a container
/// three times, its namespace twice, all before or between writes that do not touch them. Each
/// answer read from SQLite costs a reader connection, a transaction and the row's decoding;
/// from here, a dictionary lookup.
///
/// Every write through ``MetadataStore`` calls ``invalidate()`` once it has finished (committed
/// or not), which forgets everything. A read notes the generation before it looks at the
/// database and keeps its answer only if no write has finished since, so an answer read before
/// a commit is never kept after it.
final class ReadCache: Sendable {
    enum Key: Hashable, Sendable {
        case content(namespace: String, digest: String)
        case container(namespace: String, id: String)
        case image(namespace: String, name: String)
        case namespace(String)
    }

    /// Answers kept at most; beyond, all are forgotten (a burst of distinct lookups gains little).
    static let capacity = 1024

    private struct State {
        var generation: UInt64 = 0
        var entries: [Key: any Sendable] = [:]
    }

    private let state = Mutex(State())

    /// The kept answer for `key`, or `read()`'s, kept for the next caller if no write finished
    /// meanwhile.
    func value<T: Sendable, E: Error>(_ key: Key, _ read: () throws(E) -> T) throws(E) -> T {
        let (cached, generation) = state.withLock { ($0.entries[key] as? T, $0.generation) }
        if let cached { return cached }
        let value = try read()
        state.withLock { state in
            guard state.generation == generation else { return }
            if state.entries.count >= Self.capacity { state.entries.removeAll(keepingCapacity: true) }
            state.entries[key] = value
        }
        return value
    }

    /// Forgets every answer: a write has finished.
    func invalidate() {
        state.withLock { state in
            state.generation &+= 1
            if !state.entries.isEmpty { state.entries.removeAll() }
        }
    }
}
