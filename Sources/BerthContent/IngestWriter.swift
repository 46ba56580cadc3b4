#if canImport(Glibc)
import Glibc
#endif
import BerthCore
import BerthSystem
import struct Crypto.SHA256
import struct Crypto.SHA384
import struct Crypto.SHA512
import protocol Crypto.HashFunction

/// Appends to one ingest while hashing what it writes.
///
/// A writer holds its ingest's lock until ``close()``. It is used by one task at a time (one
/// `Content/Write` stream), which is why it may be passed to blocking work despite being mutable.
public final class IngestWriter: @unchecked Sendable {
    public let key: String
    public let ref: String
    public private(set) var offset: Int64
    public private(set) var total: Int64
    public let startedAt: Timestamp
    private let store: BlobStore
    private let directory: String
    private var fd: Int32
    private var hasher = SHA256()
    private var closed = false

    init(store: BlobStore, key: String, ref: String, total: Int64) throws(BerthError) {
        self.store = store
        self.key = key
        self.ref = ref
        self.directory = store.ingestDirectory(key)
        let dataPath = "\(directory)/data"
        if FileSystem.exists(dataPath) {
            // Resume: hash what an earlier writer left so the final digest covers all of it.
            let file = open(dataPath, O_RDWR | O_APPEND | O_CLOEXEC)
            guard file >= 0 else { throw errnoError("open ingest \(ref)") }
            do throws(BerthError) {
                offset = try hashContents(of: file, into: &hasher, what: "ingest \(ref)")
            } catch {
                Glibc.close(file)  // init fails before deinit could close it
                throw error
            }
            fd = file
            let recordedTotal = (try? FileSystem.readString("\(directory)/total")).flatMap(Int64.init) ?? 0
            self.total = total > 0 ? total : recordedTotal
            startedAt = (try? FileSystem.readString("\(directory)/startedat")).flatMap(Int64.init)
                .map(Timestamp.init(nanosecondsSinceEpoch:)) ?? .now
        } else {
            try? FileSystem.removeTree(directory)  // a directory without data is a crash leftover
            try FileSystem.makeDirectories(directory, mode: 0o700)
            startedAt = .now
            try FileSystem.writeAtomically(Array(ref.utf8), to: "\(directory)/ref", mode: 0o600)
            try FileSystem.writeAtomically(Array(String(startedAt.nanosecondsSinceEpoch).utf8), to: "\(directory)/startedat", mode: 0o600)
            fd = open(dataPath, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw errnoError("create ingest \(ref)") }
            offset = 0
            self.total = total
        }
        if total > 0 { try recordTotal(total) }
    }

    deinit { close() }

    /// Releases the file and the ingest's lock; the data stays for a later writer to resume.
    public func close() {
        guard !closed else { return }
        closed = true
        if fd >= 0 { Glibc.close(fd); fd = -1 }
        store.unlock(key)
    }

    public var status: IngestStatus {
        IngestStatus(key: key, ref: ref, offset: offset, total: total, startedAt: startedAt, updatedAt: .now)
    }

    /// The digest of the bytes written so far.
    public var digest: Digest {
        Digest(algorithm: .sha256, bytes: hasher.finalize())
    }

    public func setTotal(_ value: Int64) throws(BerthError) {
        guard value > 0, value != total else { return }
        try recordTotal(value)
    }

    private func recordTotal(_ value: Int64) throws(BerthError) {
        total = value
        try FileSystem.writeAtomically(Array(String(value).utf8), to: "\(directory)/total", mode: 0o600)
    }

    public func write(_ bytes: [UInt8]) throws(BerthError) {
        guard !bytes.isEmpty else { return }
        try FileSystem.writeAll(fd: fd, bytes)
        hasher.update(data: bytes)
        offset += Int64(bytes.count)
    }

    /// Discards everything written so far.
    public func truncate() throws(BerthError) {
        guard ftruncate(fd, 0) == 0 else { throw errnoError("truncate ingest \(ref)") }
        hasher = SHA256()
        offset = 0
    }

    /// Checks size and digest and makes the data durable. Throws `failedPrecondition` on a
    /// mismatch; the ingest is then left as it is, so nothing is stored.
    public func verify(size: Int64, expected: Digest?) throws(BerthError) -> VerifiedIngest {
        if size > 0 && size != offset {
            throw .failedPrecondition("unexpected commit size \(offset), expected \(size)")
        }
        var actual = digest
        if let expected, expected.algorithm != .sha256 {
            actual = try rehash(expected.algorithm)
        }
        if let expected, expected != actual {
            throw .failedPrecondition("unexpected commit digest \(actual), expected \(expected)")
        }
        guard fsync(fd) == 0 else { throw errnoError("fsync ingest \(ref)") }
        return VerifiedIngest(key: key, digest: actual, size: offset)
    }

    private func rehash(_ algorithm: DigestAlgorithm) throws(BerthError) -> Digest {
        func run<H: HashFunction>(_ hasher: inout H) throws(BerthError) -> Digest {
            _ = try hashContents(of: fd, into: &hasher, what: "ingest \(ref)")
            return Digest(algorithm: algorithm, bytes: hasher.finalize())
        }
        switch algorithm {
        case .sha256: var h = SHA256(); return try run(&h)
        case .sha384: var h = SHA384(); return try run(&h)
        case .sha512: var h = SHA512(); return try run(&h)
        }
    }
}

/// Feeds a whole file to `hasher` in 1 MiB pieces; returns its length.
private func hashContents<H: HashFunction>(of fd: Int32, into hasher: inout H, what: String) throws(BerthError) -> Int64 {
    var position: Int64 = 0
    while true {
        let chunk = try preadFully(fd: fd, offset: position, length: 1 << 20, what: what)
        if chunk.isEmpty { return position }
        hasher.update(data: chunk)
        position += Int64(chunk.count)
    }
}
