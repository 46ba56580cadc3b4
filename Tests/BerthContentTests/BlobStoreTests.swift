#if canImport(Glibc)
import Glibc
#endif
import BerthContent
import BerthCore
import BerthTestSupport
import Testing

/// Known digests (computed with coreutils' sha256sum / sha512sum).
enum Known {
    static let helloWorld = Array("hello world".utf8)
    static let helloWorldSHA256 = try! Digest(parsing: "sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9")
    static let helloWorldSHA512 = try! Digest(parsing: "sha512:309ecc489c12d6eb4cc40f50c902f2b4d0ed77ee511a7c7a9bcd3ca86d4cd86f989dd35bc5ff499670da34255b45b0cfd830e81f605dcf7dc5542e93ae9cd76f")
    static let helloSHA256 = try! Digest(parsing: "sha256:5e3235a8346e5a4585f8c58562f5052b8fe26a3bb122e1e96c76784964dfc461")  // "hello "
    static let emptySHA256 = try! Digest(parsing: "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
}

/// Runs `body` with a BlobStore rooted in a fresh temporary directory.
func withBlobStore<T>(_ body: (BlobStore, TemporaryDirectory) throws -> T) throws -> T {
    try withTemporaryDirectory(prefix: "berth-blobs") { dir in
        try body(try BlobStore(root: dir.appending("content")), dir)
    }
}

func fileMode(_ path: String) -> mode_t? {
    var st = stat()
    guard stat(path, &st) == 0 else { return nil }
    return st.st_mode & 0o7777
}

func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

func writeFile(_ path: String, _ text: String) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    precondition(fd >= 0, "open \(path)")
    _ = Array(text.utf8).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    close(fd)
}

@Suite("BlobStore: layout and blobs")
struct BlobStoreLayoutTests {
    @Test func initCreatesTheLayout() throws {
        try withBlobStore { (store, dir) throws in
            for name in ["blobs/sha256", "blobs/sha384", "blobs/sha512", "ingest"] {
                #expect(exists("\(store.root)/\(name)"), "\(name)")
            }
            #expect(fileMode("\(store.root)/ingest") == 0o700)
            #expect(store.allBlobs().isEmpty)
            #expect(store.ingests().isEmpty)
            // Opening the same root again is fine.
            _ = try BlobStore(root: store.root)
        }
    }

    @Test func pathIsAlgorithmThenHex() throws {
        try withBlobStore { (store, _) throws in
            #expect(store.path(of: Known.helloWorldSHA256) == "\(store.root)/blobs/sha256/\(Known.helloWorldSHA256.encoded)")
            #expect(store.path(of: Known.helloWorldSHA512) == "\(store.root)/blobs/sha512/\(Known.helloWorldSHA512.encoded)")
        }
    }

    @Test func missingBlob() throws {
        try withBlobStore { (store, _) throws in
            #expect(!store.contains(Known.helloWorldSHA256))
            #expect(store.stat(Known.helloWorldSHA256) == nil)
            let readError = #expect(throws: BerthError.self) { try store.read(Known.helloWorldSHA256, offset: 0, length: 4) }
            #expect(readError?.code == .notFound)
            #expect(readError?.message.contains(Known.helloWorldSHA256.description) == true)
            let readAllError = #expect(throws: BerthError.self) { try store.readAll(Known.helloWorldSHA256) }
            #expect(readAllError?.code == .notFound)
            // Deleting what is not there is not an error.
            #expect(throws: Never.self) { try store.delete(Known.helloWorldSHA256) }
        }
    }

    @Test func readsRangesOfACommittedBlob() throws {
        try withBlobStore { (store, _) throws in
            let writer = try store.openIngest(key: "k", ref: "ref", total: 0)
            defer { writer.close() }
            try writer.write(Known.helloWorld)
            #expect(try store.install(writer.verify(size: 11, expected: nil)))
            let digest = Known.helloWorldSHA256
            #expect(try store.read(digest, offset: 0, length: 5) == Array("hello".utf8))
            #expect(try store.read(digest, offset: 6, length: 100) == Array("world".utf8), "short at the end")
            #expect(try store.read(digest, offset: 11, length: 4) == [])
            #expect(try store.readAll(digest) == Known.helloWorld)
            let tooLarge = #expect(throws: BerthError.self) { try store.readAll(digest, limit: 10) }
            #expect(tooLarge?.code == .failedPrecondition)
            #expect(store.stat(digest)?.size == 11)
            #expect(store.allBlobs() == [digest])
            try store.delete(digest)
            #expect(!store.contains(digest))
            #expect(store.allBlobs().isEmpty)
        }
    }

    @Test func ingestKeyIsAHashOfNamespaceAndRef() {
        let key = BlobStore.ingestKey(namespace: "default", ref: "../../etc/passwd")
        #expect(key.utf8.count == 64)
        #expect(key.allSatisfy { $0.isHexDigit && !$0.isUppercase })
        #expect(key == BlobStore.ingestKey(namespace: "default", ref: "../../etc/passwd"))
        #expect(key != BlobStore.ingestKey(namespace: "other", ref: "../../etc/passwd"))
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        #expect(BlobStore.ingestKey(namespace: "ab", ref: "c") != BlobStore.ingestKey(namespace: "a", ref: "bc"))
    }
}

@Suite("BlobStore: ingests")
struct IngestWriterTests {
    @Test func writeVerifyInstall() throws {
        try withBlobStore { (store, _) throws in
            let writer = try store.openIngest(key: "k1", ref: "default/layer-1", total: 11)
            defer { writer.close() }
            #expect(writer.offset == 0)
            #expect(writer.total == 11)
            try writer.write(Array("hello ".utf8))
            try writer.write([])
            try writer.write(Array("world".utf8))
            #expect(writer.offset == 11)
            #expect(writer.digest == Known.helloWorldSHA256)
            #expect(writer.status.offset == 11)
            #expect(writer.status.ref == "default/layer-1")

            let verified = try writer.verify(size: 11, expected: Known.helloWorldSHA256)
            #expect(verified.digest == Known.helloWorldSHA256)
            #expect(verified.size == 11)
            #expect(verified.key == "k1")
            #expect(!store.contains(Known.helloWorldSHA256), "verify alone installs nothing")

            #expect(try store.install(verified) == true)
            #expect(store.contains(Known.helloWorldSHA256))
            #expect(try store.readAll(Known.helloWorldSHA256) == Known.helloWorld)
            #expect(fileMode(store.path(of: Known.helloWorldSHA256)) == 0o444, "committed blobs are read-only")
            #expect(store.ingestStatus(key: "k1") == nil, "install removes the ingest")
            #expect(store.ingests().isEmpty)
        }
    }

    @Test func verifyWithoutExpectationsUsesWhatWasWritten() throws {
        try withBlobStore { (store, _) throws in
            let writer = try store.openIngest(key: "k", ref: "r", total: 0)
            defer { writer.close() }
            try writer.write(Known.helloWorld)
            let verified = try writer.verify(size: 0, expected: nil)
            #expect(verified.digest == Known.helloWorldSHA256)
            #expect(verified.size == 11)
        }
    }

    @Test func emptyBlob() throws {
        try withBlobStore { (store, _) throws in
            let writer = try store.openIngest(key: "k", ref: "r", total: 0)
            defer { writer.close() }
            #expect(writer.digest == Known.emptySHA256)
            #expect(try store.install(writer.verify(size: 0, expected: Known.emptySHA256)))
            #expect(store.stat(Known.emptySHA256)?.size == 0)
        }
    }

    @Test func sizeMismatchIsFailedPreconditionAndInstallsNothing() throws {
        try withBlobStore { (store, _) throws in
            let writer = try store.openIngest(key: "k", ref: "r", total: 0)
            defer { writer.close() }
            try writer.write(Known.helloWorld)
            let error = #expect(throws: BerthError.self) { try writer.verify(size: 12, expected: Known.helloWorldSHA256) }
            #expect(error?.code == .failedPrecondition)
            #expect(error?.message.contains("unexpected commit size 11, expected 12") == true, "\(error?.message ?? "")")
            #expect(!store.contains(Known.helloWorldSHA256))
            #expect(store.allBlobs().isEmpty)
            #expect(store.ingestStatus(key: "k")?.offset == 11, "the ingest is kept for a retry")
            // The same writer can still finish correctly.
            #expect(try store.install(writer.verify(size: 11, expected: Known.helloWorldSHA256)))
        }
    }

    @Test func digestMismatchIsFailedPreconditionAndInstallsNothing() throws {
        try withBlobStore { (store, _) throws in
            let writer = try store.openIngest(key: "k", ref: "r", total: 0)
            defer { writer.close() }
            try writer.write(Array("hello worle".utf8))
            let error = #expect(throws: BerthError.self) { try writer.verify(size: 11, expected: Known.helloWorldSHA256) }
            #expect(error?.code == .failedPrecondition)
            let message = error?.message ?? ""
            #expect(message.contains("unexpected commit digest"), "\(message)")
            #expect(message.contains("expected \(Known.helloWorldSHA256)"), "\(message)")
            #expect(store.allBlobs().isEmpty)
            #expect(store.ingestStatus(key: "k") != nil)
        }
    }

    @Test func sha512ExpectationRehashes() throws {
        try withBlobStore { (store, _) throws in
            let writer = try store.openIngest(key: "k", ref: "r", total: 0)
            defer { writer.close() }
            try writer.write(Known.helloWorld)
            let verified = try writer.verify(size: 11, expected: Known.helloWorldSHA512)
            #expect(verified.digest == Known.helloWorldSHA512)
            #expect(try store.install(verified))
            #expect(exists("\(store.root)/blobs/sha512/\(Known.helloWorldSHA512.encoded)"))
            #expect(!store.contains(Known.helloWorldSHA256))
            #expect(store.allBlobs() == [Known.helloWorldSHA512])
        }
    }

    @Test func sha512MismatchIsFailedPrecondition() throws {
        try withBlobStore { (store, _) throws in
            let writer = try store.openIngest(key: "k", ref: "r", total: 0)
            defer { writer.close() }
            try writer.write(Array("other".utf8))
            let error = #expect(throws: BerthError.self) { try writer.verify(size: 0, expected: Known.helloWorldSHA512) }
            #expect(error?.code == .failedPrecondition)
            #expect(error?.message.contains("sha512:") == true)
        }
    }

    @Test func resumeAfterCloseContinuesAtTheOffset() throws {
        try withBlobStore { (store, _) throws in
            let first = try store.openIngest(key: "k", ref: "r", total: 11)
            try first.write(Array("hello ".utf8))
            let startedAt = first.startedAt
            first.close()
            #expect(!store.isLocked("k"))
            #expect(store.ingestStatus(key: "k")?.offset == 6)

            let second = try store.openIngest(key: "k", ref: "r", total: 0)
            defer { second.close() }
            #expect(second.offset == 6)
            #expect(second.total == 11, "the recorded total survives")
            #expect(second.startedAt == startedAt)
            #expect(second.digest == Known.helloSHA256, "the resumed writer hashed the earlier bytes")
            try second.write(Array("world".utf8))
            let verified = try second.verify(size: 11, expected: Known.helloWorldSHA256)
            #expect(verified.digest == Known.helloWorldSHA256)
            #expect(try store.install(verified))
            #expect(try store.readAll(Known.helloWorldSHA256) == Known.helloWorld)
        }
    }

    @Test func resumeWithANewTotalRecordsIt() throws {
        try withBlobStore { (store, _) throws in
            let first = try store.openIngest(key: "k", ref: "r", total: 5)
            first.close()
            let second = try store.openIngest(key: "k", ref: "r", total: 9)
            defer { second.close() }
            #expect(second.total == 9)
            #expect(store.ingestStatus(key: "k")?.total == 9)
        }
    }

    @Test func truncateDiscardsEverythingWritten() throws {
        try withBlobStore { (store, _) throws in
            let writer = try store.openIngest(key: "k", ref: "r", total: 0)
            defer { writer.close() }
            try writer.write(Array("garbage that will go".utf8))
            try writer.truncate()
            #expect(writer.offset == 0)
            #expect(writer.digest == Known.emptySHA256)
            #expect(store.ingestStatus(key: "k")?.offset == 0)
            try writer.write(Known.helloWorld)
            #expect(store.ingestStatus(key: "k")?.offset == 11)
            #expect(try store.install(writer.verify(size: 11, expected: Known.helloWorldSHA256)))
            #expect(try store.readAll(Known.helloWorldSHA256) == Known.helloWorld)
        }
    }

    @Test func truncateThenResume() throws {
        try withBlobStore { (store, _) throws in
            let first = try store.openIngest(key: "k", ref: "r", total: 0)
            try first.write(Array("junk".utf8))
            try first.truncate()
            try first.write(Array("hello ".utf8))
            first.close()
            let second = try store.openIngest(key: "k", ref: "r", total: 0)
            defer { second.close() }
            #expect(second.offset == 6)
            try second.write(Array("world".utf8))
            #expect(second.digest == Known.helloWorldSHA256)
        }
    }

    @Test func secondWriterOnTheSameKeyIsUnavailable() throws {
        try withBlobStore { (store, _) throws in
            let first = try store.openIngest(key: "k", ref: "default/r", total: 0)
            #expect(store.isLocked("k"))
            let error = #expect(throws: BerthError.self) { try store.openIngest(key: "k", ref: "default/r", total: 0) }
            #expect(error?.code == .unavailable)
            #expect(error?.message.contains("ref default/r locked") == true, "\(error?.message ?? "")")
            // Another key is independent.
            let other = try store.openIngest(key: "k2", ref: "default/r2", total: 0)
            other.close()
            // The refused writer did not disturb the first.
            try first.write(Known.helloWorld)
            first.close()
            first.close()  // idempotent
            #expect(!store.isLocked("k"))
            let again = try store.openIngest(key: "k", ref: "default/r", total: 0)
            defer { again.close() }
            #expect(again.offset == 11)
        }
    }

    @Test func installWhenTheBlobExistsReturnsFalse() throws {
        try withBlobStore { (store, _) throws in
            let first = try store.openIngest(key: "a", ref: "a", total: 0)
            try first.write(Known.helloWorld)
            #expect(try store.install(first.verify(size: 11, expected: nil)) == true)
            first.close()

            let second = try store.openIngest(key: "b", ref: "b", total: 0)
            defer { second.close() }
            try second.write(Known.helloWorld)
            let verified = try second.verify(size: 11, expected: Known.helloWorldSHA256)
            #expect(try store.install(verified) == false)
            #expect(store.ingestStatus(key: "b") == nil, "the duplicate ingest is dropped")
            #expect(try store.readAll(Known.helloWorldSHA256) == Known.helloWorld)
            #expect(store.allBlobs() == [Known.helloWorldSHA256])
        }
    }

    @Test func ingestStatusAndListing() throws {
        try withBlobStore { (store, _) throws in
            let before = Timestamp.now
            let one = try store.openIngest(key: "one", ref: "ns/one", total: 100)
            try one.write(Array("12345".utf8))
            let two = try store.openIngest(key: "two", ref: "ns/two", total: 0)
            two.close()

            let status = try #require(store.ingestStatus(key: "one"))
            #expect(status.key == "one")
            #expect(status.ref == "ns/one")
            #expect(status.offset == 5)
            #expect(status.total == 100)
            #expect(status.startedAt >= before)
            // updatedAt is the data file's mtime, which the kernel stamps from a coarse clock.
            #expect(status.updatedAt.seconds >= before.seconds - 1)
            #expect(store.ingestStatus(key: "two")?.offset == 0)
            #expect(store.ingestStatus(key: "three") == nil)

            #expect(Set(store.ingests().map(\.key)) == ["one", "two"])
            #expect(Set(store.ingests().map(\.ref)) == ["ns/one", "ns/two"])
            try one.setTotal(200)
            #expect(store.ingestStatus(key: "one")?.total == 200)
            try one.setTotal(0)  // not a total: ignored
            #expect(one.total == 200)
            one.close()
        }
    }

    @Test func abortIngest() throws {
        try withBlobStore { (store, _) throws in
            let writer = try store.openIngest(key: "k", ref: "ns/r", total: 0)
            try writer.write(Known.helloWorld)
            let busy = #expect(throws: BerthError.self) { try store.abortIngest(key: "k", ref: "ns/r") }
            #expect(busy?.code == .unavailable)
            #expect(store.ingestStatus(key: "k") != nil, "a refused abort keeps the data")
            writer.close()

            try store.abortIngest(key: "k", ref: "ns/r")
            #expect(store.ingestStatus(key: "k") == nil)
            #expect(!exists("\(store.root)/ingest/k"))
            let missing = #expect(throws: BerthError.self) { try store.abortIngest(key: "k", ref: "ns/r") }
            #expect(missing?.code == .notFound)
            #expect(missing?.message.contains(quoted("ns/r")) == true, "\(missing?.message ?? "")")
        }
    }

    @Test func abortedIngestStartsOverWhenReopened() throws {
        try withBlobStore { (store, _) throws in
            let first = try store.openIngest(key: "k", ref: "r", total: 0)
            try first.write(Array("stale".utf8))
            first.close()
            try store.abortIngest(key: "k", ref: "r")
            let second = try store.openIngest(key: "k", ref: "r", total: 0)
            defer { second.close() }
            #expect(second.offset == 0)
            #expect(second.digest == Known.emptySHA256)
        }
    }
}

@Suite("BlobStore: crash leftovers")
struct BlobStoreRecoveryTests {
    @Test func tempFilesInBlobsAreRemovedOnInit() throws {
        try withBlobStore { (store, _) throws in
            let writer = try store.openIngest(key: "k", ref: "r", total: 0)
            try writer.write(Known.helloWorld)
            #expect(try store.install(writer.verify(size: 11, expected: nil)))
            writer.close()
            let tmp256 = "\(store.root)/blobs/sha256/\(Known.helloWorldSHA256.encoded).tmp-123-456"
            let tmp512 = "\(store.root)/blobs/sha512/partial.tmp"
            writeFile(tmp256, "half a blob")
            writeFile(tmp512, "x")

            let reopened = try BlobStore(root: store.root)
            #expect(!exists(tmp256))
            #expect(!exists(tmp512))
            #expect(reopened.contains(Known.helloWorldSHA256), "committed blobs stay")
            #expect(reopened.allBlobs() == [Known.helloWorldSHA256])
        }
    }

    @Test func unparseableNamesInBlobsAreNotListed() throws {
        try withBlobStore { (store, _) throws in
            writeFile("\(store.root)/blobs/sha256/not-a-digest", "x")
            #expect(store.allBlobs().isEmpty)
        }
    }

    @Test func ingestDirectoryWithoutDataIsNotAnIngest() throws {
        try withBlobStore { (store, _) throws in
            let dir = "\(store.root)/ingest/crashed"
            #expect(mkdir(dir, 0o700) == 0)
            writeFile("\(dir)/ref", "old/ref")
            writeFile("\(dir)/total", "999")
            #expect(store.ingestStatus(key: "crashed") == nil)
            #expect(store.ingests().isEmpty)

            // A writer on that key starts from scratch and replaces the leftovers.
            let writer = try store.openIngest(key: "crashed", ref: "new/ref", total: 0)
            defer { writer.close() }
            #expect(writer.offset == 0)
            #expect(writer.total == 0)
            try writer.write(Known.helloWorld)
            let status = try #require(store.ingestStatus(key: "crashed"))
            #expect(status.ref == "new/ref")
            #expect(status.offset == 11)
            #expect(status.total == 0, "the stale total was removed with the leftover")
        }
    }

    @Test func ingestWithDataButNoRefIsNotListed() throws {
        try withBlobStore { (store, _) throws in
            let dir = "\(store.root)/ingest/noref"
            #expect(mkdir(dir, 0o700) == 0)
            writeFile("\(dir)/data", "abc")
            #expect(store.ingestStatus(key: "noref") == nil)
            #expect(store.ingests().isEmpty)
        }
    }

    @Test func ingestSurvivesANewStoreOnTheSameRoot() throws {
        try withBlobStore { (store, _) throws in
            let writer = try store.openIngest(key: "k", ref: "r", total: 11)
            try writer.write(Array("hello ".utf8))
            writer.close()
            let restarted = try BlobStore(root: store.root)
            #expect(restarted.ingestStatus(key: "k")?.offset == 6)
            let resumed = try restarted.openIngest(key: "k", ref: "r", total: 0)
            defer { resumed.close() }
            try resumed.write(Array("world".utf8))
            #expect(try restarted.install(resumed.verify(size: 11, expected: Known.helloWorldSHA256)))
        }
    }
}
