#if canImport(Glibc)
import Glibc
#endif
import BerthCore
import BerthSystem
import struct Crypto.SHA256
import struct Crypto.SHA384
import struct Crypto.SHA512
import protocol Crypto.HashFunction
import Synchronization

/// Blobs on disk, addressed by digest, and the ingests that become them.
///
/// Layout under `root`:
/// ```
/// blobs/<algorithm>/<hex>     committed, verified, immutable content
/// ingest/<key>/data           bytes written so far (appended)
/// ingest/<key>/ref            the ingest's full ref (namespace-qualified by the caller)
/// ingest/<key>/total          expected total size, if known
/// ingest/<key>/startedat      start time in nanoseconds
/// ```
/// A blob appears under `blobs/` only through ``install(_:)``, which renames a fully written and
/// fsynced ingest into place: a crash leaves either no blob or the whole blob. The store knows
/// nothing of namespaces or references; `BerthMetadata` decides what is visible and what is kept.
public final class BlobStore: Sendable {
    public let root: String
    private let activeWriters = Mutex<[String: Timestamp]>([:])

    public init(root: String) throws(BerthError) {
        self.root = root
        for algorithm in DigestAlgorithm.allCases {
            try FileSystem.makeDirectories("\(root)/blobs/\(algorithm.rawValue)", mode: 0o711)
        }
        try FileSystem.makeDirectories("\(root)/ingest", mode: 0o700)
        // Temp files of an install interrupted by a crash are garbage.
        for algorithm in DigestAlgorithm.allCases {
            let dir = "\(root)/blobs/\(algorithm.rawValue)"
            for name in FileSystem.list(dir) where name.contains(".tmp") {
                try? FileSystem.remove("\(dir)/\(name)")
            }
        }
    }

    // MARK: Blobs

    public func path(of digest: Digest) -> String {
        "\(root)/blobs/\(digest.algorithm.rawValue)/\(digest.encoded)"
    }

    /// Size and creation time of a committed blob, or nil if it is not on disk.
    public func stat(_ digest: Digest) -> (size: Int64, modified: Timestamp)? {
        guard let st = FileSystem.status(of: path(of: digest)) else { return nil }
        return (Int64(st.st_size), Timestamp(seconds: Int64(st.st_mtim.tv_sec), nanos: Int32(st.st_mtim.tv_nsec)))
    }

    public func contains(_ digest: Digest) -> Bool { FileSystem.exists(path(of: digest)) }

    /// Every committed blob on disk.
    public func allBlobs() -> [Digest] {
        var out: [Digest] = []
        for algorithm in DigestAlgorithm.allCases {
            for name in FileSystem.list("\(root)/blobs/\(algorithm.rawValue)") {
                if let digest = try? Digest(parsing: "\(algorithm.rawValue):\(name)") { out.append(digest) }
            }
        }
        return out
    }

    public func delete(_ digest: Digest) throws(BerthError) {
        try FileSystem.remove(path(of: digest))
    }

    /// Reads up to `length` bytes at `offset` of a blob; fewer at its end.
    public func read(_ digest: Digest, offset: Int64, length: Int) throws(BerthError) -> [UInt8] {
        try openReader(digest).read(offset: offset, length: length)
    }

    /// Opens a blob for reading; the open file keeps serving even if the blob is deleted meanwhile.
    public func openReader(_ digest: Digest) throws(BerthError) -> BlobReader {
        let fd = open(path(of: digest), O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { throw .notFound("content \(digest): not found") }
            throw errnoError("open content \(digest)")
        }
        return BlobReader(fd: fd, digest: digest)
    }

    /// The whole blob, for small documents (manifests, indexes, configs).
    public func readAll(_ digest: Digest, limit: Int64 = 64 << 20) throws(BerthError) -> [UInt8] {
        guard let info = stat(digest) else { throw .notFound("content \(digest): not found") }
        guard info.size <= limit else {
            throw .failedPrecondition("content \(digest): \(info.size) bytes is too large to read whole")
        }
        return try read(digest, offset: 0, length: Int(info.size))
    }

    // MARK: Ingests

    /// Opens (or resumes) the ingest stored under `key`, locking it for this writer.
    ///
    /// Throws `unavailable` if another writer holds `key`, as containerd does, so a client
    /// retries rather than interleaving writes.
    public func openIngest(key: String, ref: String, total: Int64) throws(BerthError) -> IngestWriter {
        let now = Timestamp.now
        let locked = activeWriters.withLock { writers -> Timestamp? in
            if let since = writers[key] { return since }
            writers[key] = now
            return nil
        }
        if let since = locked {
            let seconds = max(0, now.seconds - since.seconds)
            throw .unavailable("ref \(ref) locked for \(seconds)s (since \(since.seconds)): unavailable")
        }
        do {
            return try IngestWriter(store: self, key: key, ref: ref, total: total)
        } catch {
            unlock(key)
            throw error
        }
    }

    func unlock(_ key: String) {
        _ = activeWriters.withLock { $0.removeValue(forKey: key) }
    }

    public func isLocked(_ key: String) -> Bool {
        activeWriters.withLock { $0[key] != nil }
    }

    func ingestDirectory(_ key: String) -> String { "\(root)/ingest/\(key)" }

    /// The state of one ingest, or nil if there is none under `key`.
    public func ingestStatus(key: String) -> IngestStatus? {
        let dir = ingestDirectory(key)
        guard let ref = try? FileSystem.readString("\(dir)/ref"),
              let data = FileSystem.status(of: "\(dir)/data")
        else { return nil }
        let started = (try? FileSystem.readString("\(dir)/startedat")).flatMap(Int64.init).map(Timestamp.init(nanosecondsSinceEpoch:))
        let total = (try? FileSystem.readString("\(dir)/total")).flatMap(Int64.init) ?? 0
        let updated = Timestamp(seconds: Int64(data.st_mtim.tv_sec), nanos: Int32(data.st_mtim.tv_nsec))
        return IngestStatus(key: key, ref: ref, offset: Int64(data.st_size), total: total,
                            startedAt: started ?? updated, updatedAt: updated)
    }

    /// Names of every directory under `ingest/`, complete or not.
    public func ingestKeys() -> [String] {
        FileSystem.list("\(root)/ingest")
    }

    /// All ingests on disk, active or interrupted.
    public func ingests() -> [IngestStatus] {
        FileSystem.list("\(root)/ingest").compactMap { ingestStatus(key: $0) }
    }

    /// Removes an ingest's data; `notFound` if there is none, `unavailable` while a writer holds it.
    public func abortIngest(key: String, ref: String) throws(BerthError) {
        guard FileSystem.exists(ingestDirectory(key)) else { throw .notFound("ingest ref \(quoted(ref)): not found") }
        try discardIdleIngest(key: key, ref: ref)
    }

    /// Removes an ingest's directory unless a writer holds it (`unavailable`). The ingest's lock
    /// is held while removing, so no writer can open it half-way.
    public func discardIdleIngest(key: String, ref: String) throws(BerthError) {
        let now = Timestamp.now
        let taken = activeWriters.withLock { writers -> Bool in
            guard writers[key] == nil else { return false }
            writers[key] = now
            return true
        }
        guard taken else { throw .unavailable("ref \(ref) is being written: unavailable") }
        defer { unlock(key) }
        try discardIngest(key: key)
    }

    /// Removes an ingest's directory whoever holds it; for its own writer's cleanup paths.
    public func discardIngest(key: String) throws(BerthError) {
        try FileSystem.removeTree(ingestDirectory(key))
    }

    /// Moves a verified ingest into `blobs/`. Returns false (and drops the ingest) if the blob
    /// was already there. The caller runs this inside its metadata transaction, so the blob and
    /// its reference appear together.
    public func install(_ blob: VerifiedIngest) throws(BerthError) -> Bool {
        let destination = path(of: blob.digest)
        defer { try? discardIngest(key: blob.key) }
        if FileSystem.exists(destination) { return false }
        try FileSystem.commitRename(from: "\(ingestDirectory(blob.key))/data", to: destination)
        chmod(destination, 0o444)
        return true
    }
}

/// An ingest as a client sees it through `Content/Status`.
public struct IngestStatus: Sendable {
    public var key: String
    public var ref: String
    public var offset: Int64
    public var total: Int64
    public var startedAt: Timestamp
    public var updatedAt: Timestamp
    /// The digest the writer declared, when the metadata store knows it.
    public var expected: Digest? = nil
}

/// An ingest whose size and digest were checked and whose data is on disk, ready to install.
public struct VerifiedIngest: Sendable {
    public let key: String
    public let digest: Digest
    public let size: Int64
}

func preadFully(fd: Int32, offset: Int64, length: Int, what: String) throws(BerthError) -> [UInt8] {
    var buffer = [UInt8](repeating: 0, count: length)
    var filled = 0
    while filled < length {
        let n = buffer.withUnsafeMutableBytes { raw in
            pread(fd, raw.baseAddress! + filled, length - filled, off_t(offset) + off_t(filled))
        }
        if n < 0 {
            if errno == EINTR { continue }
            throw errnoError("read \(what)")
        }
        if n == 0 { break }
        filled += n
    }
    if filled < length { buffer.removeLast(length - filled) }
    return buffer
}

extension BlobStore {
    /// The directory name of an ingest: a hash of namespace and ref, so refs of any shape
    /// (slashes, `..`) never become paths.
    public static func ingestKey(namespace: String, ref: String) -> String {
        var hasher = SHA256()
        hasher.update(data: Array(namespace.utf8))
        hasher.update(data: [0])
        hasher.update(data: Array(ref.utf8))
        return Digest(algorithm: .sha256, bytes: hasher.finalize()).encoded
    }
}

/// An open blob. Reads may come from any thread, one at a time; the file closes with the reader.
public final class BlobReader: @unchecked Sendable {
    private let fd: Int32
    public let digest: Digest

    init(fd: Int32, digest: Digest) {
        self.fd = fd
        self.digest = digest
    }

    deinit { close(fd) }

    /// Up to `length` bytes at `offset`; fewer at the end.
    public func read(offset: Int64, length: Int) throws(BerthError) -> [UInt8] {
        try preadFully(fd: fd, offset: offset, length: length, what: "content \(digest)")
    }
}
