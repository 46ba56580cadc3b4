import BerthContent
import BerthCore
@testable import BerthMetadata
import Testing

@Suite("MetadataStore: content")
struct ContentStoreTests {
    @Test func commitMakesContentVisibleInItsNamespaceOnly() async throws {
        try await withStore { (store, _) async throws in
            let before = Timestamp.now
            let writer = try await store.openWriter(defaultNS, ref: "upload-1", lease: nil, total: 11, expected: nil)
            #expect(writer.ref == "upload-1")
            #expect(writer.offset == 0)
            #expect(writer.total == 11)
            try await writer.write(bytes("hello "))
            try await writer.write(bytes("world"))
            #expect(writer.offset == 11)
            #expect(writer.digest == Known.helloWorldSHA256)
            try await writer.commit(size: 11, expected: Known.helloWorldSHA256, labels: ["k": "v"])

            let info = try await store.contentInfo(defaultNS, digest: Known.helloWorldSHA256)
            #expect(info.digest == Known.helloWorldSHA256)
            #expect(info.size == 11)
            #expect(info.labels == ["k": "v"])
            #expect(info.createdAt >= before)
            #expect(try await store.contents(defaultNS, filter: .all).map(\.digest) == [Known.helloWorldSHA256])
            #expect(try store.blobs.readAll(Known.helloWorldSHA256) == Known.helloWorld)

            let elsewhere = await #expect(throws: BerthError.self) { try await store.contentInfo(ns("other"), digest: Known.helloWorldSHA256) }
            #expect(elsewhere?.code == .notFound)
            #expect(elsewhere?.message == "content digest \(Known.helloWorldSHA256): not found")
            #expect(try await store.contents(ns("other"), filter: .all).isEmpty)

            // The ingest is gone once committed.
            let status = await #expect(throws: BerthError.self) { try await store.ingestStatus(defaultNS, ref: "upload-1") }
            #expect(status?.code == .notFound)
            #expect(try await store.ingestStatuses(defaultNS, filter: .all).isEmpty)
            #expect(try await ingestRecords(store, defaultNS) == [])
            #expect(store.blobs.ingests().isEmpty)
        }
    }

    @Test func openWriterNeedsARef() async throws {
        try await withStore { (store, _) async throws in
            let error = await #expect(throws: BerthError.self) {
                try await store.openWriter(defaultNS, ref: "", lease: nil, total: 0, expected: nil)
            }
            #expect(error?.code == .invalidArgument)
            #expect(error?.message.contains("ref") == true)
        }
    }

    @Test func commitMismatchIsFailedPreconditionAndStoresNothing() async throws {
        try await withStore { (store, _) async throws in
            let writer = try await store.openWriter(defaultNS, ref: "r", lease: nil, total: 0, expected: nil)
            try await writer.write(bytes("hello worle"))
            let digestError = await #expect(throws: BerthError.self) {
                try await writer.commit(size: 11, expected: Known.helloWorldSHA256, labels: [:])
            }
            #expect(digestError?.code == .failedPrecondition)
            #expect(digestError?.message.contains("unexpected commit digest") == true)
            let sizeError = await #expect(throws: BerthError.self) {
                try await writer.commit(size: 99, expected: nil, labels: [:])
            }
            #expect(sizeError?.code == .failedPrecondition)
            #expect(sizeError?.message.contains("unexpected commit size") == true)
            #expect(try await store.contents(defaultNS, filter: .all).isEmpty)
            #expect(store.blobs.allBlobs().isEmpty)
            #expect(try await store.ingestStatus(defaultNS, ref: "r").offset == 11, "the ingest stays for a retry")
            writer.close()
        }
    }

    @Test func expectedDigestGivenAtOpenIsCheckedAtCommit() async throws {
        try await withStore { (store, _) async throws in
            let writer = try await store.openWriter(defaultNS, ref: "r", lease: nil, total: 0, expected: Known.helloWorldSHA256)
            #expect(writer.expected == Known.helloWorldSHA256)
            try await writer.write(bytes("something else"))
            let error = await #expect(throws: BerthError.self) { try await writer.commit(size: 0, expected: nil, labels: [:]) }
            #expect(error?.code == .failedPrecondition)
            writer.close()
        }
    }

    @Test func openWriterForVisibleContentIsAlreadyExists() async throws {
        try await withStore { (store, _) async throws in
            try await commitContent(store, defaultNS, Known.helloWorld)
            let error = await #expect(throws: BerthError.self) {
                try await store.openWriter(defaultNS, ref: "again", lease: nil, total: 11, expected: Known.helloWorldSHA256)
            }
            #expect(error?.code == .alreadyExists)
            #expect(error?.message == "content \(Known.helloWorldSHA256): already exists")
            #expect(try await store.ingestStatuses(defaultNS, filter: .all).isEmpty, "no ingest was started")
        }
    }

    /// containerd's shared policy: a blob on disk for one namespace becomes visible in another
    /// when a writer there names its digest, without the bytes being written again.
    @Test func expectedDigestOnDiskElsewhereIsSharedIntoTheNamespace() async throws {
        try await withStore { (store, _) async throws in
            try await commitContent(store, ns("first"), Known.helloWorld)
            let error = await #expect(throws: BerthError.self) {
                try await store.openWriter(ns("second"), ref: "pull", lease: nil, total: 11, expected: Known.helloWorldSHA256)
            }
            #expect(error?.code == .alreadyExists)
            #expect(try await store.ingestStatuses(ns("second"), filter: .all).isEmpty, "nothing was written")
            // Regression: shareIfPresent used to throw inside its write transaction, rolling the
            // shared row back.
            let shared = try await store.contentInfo(ns("second"), digest: Known.helloWorldSHA256)
            #expect(shared.size == 11)
            #expect(store.blobs.allBlobs() == [Known.helloWorldSHA256], "one copy of the bytes")
        }
    }

    @Test func expectedDigestWithTheWrongSizeIsNotShared() async throws {
        try await withStore { (store, _) async throws in
            try await commitContent(store, ns("first"), Known.helloWorld)
            let writer = try await store.openWriter(ns("second"), ref: "pull", lease: nil, total: 12, expected: Known.helloWorldSHA256)
            defer { writer.close() }
            #expect(writer.offset == 0, "a size that disagrees with the blob on disk starts a real ingest")
            let missing = await #expect(throws: BerthError.self) { try await store.contentInfo(ns("second"), digest: Known.helloWorldSHA256) }
            #expect(missing?.code == .notFound)
        }
    }

    @Test func sameBytesCommittedInAnotherNamespaceAreStoredOnce() async throws {
        try await withStore { (store, _) async throws in
            try await commitContent(store, ns("first"), Known.helloWorld, labels: ["who": "first"])
            try await commitContent(store, ns("second"), Known.helloWorld, labels: ["who": "second"])
            #expect(try await store.contentInfo(ns("first"), digest: Known.helloWorldSHA256).labels == ["who": "first"])
            #expect(try await store.contentInfo(ns("second"), digest: Known.helloWorldSHA256).labels == ["who": "second"])
            #expect(store.blobs.allBlobs() == [Known.helloWorldSHA256])
        }
    }

    @Test func expectOnAnOpenWriterForVisibleContentIsAlreadyExists() async throws {
        try await withStore { (store, _) async throws in
            try await commitContent(store, defaultNS, Known.helloWorld)
            let writer = try await store.openWriter(defaultNS, ref: "late", lease: nil, total: 0, expected: nil)
            try await writer.write(bytes("hello"))
            let error = await #expect(throws: BerthError.self) { try await writer.expect(Known.helloWorldSHA256) }
            #expect(error?.code == .alreadyExists)
            #expect(!store.blobs.isLocked(BlobStore.ingestKey(namespace: "default", ref: "late")), "the writer was closed")
            let status = await #expect(throws: BerthError.self) { try await store.ingestStatus(defaultNS, ref: "late") }
            #expect(status?.code == .notFound, "and its ingest dropped")
        }
    }

    @Test func commitOfADigestTheNamespaceHasIsAlreadyExists() async throws {
        try await withStore { (store, _) async throws in
            try await commitContent(store, defaultNS, Known.helloWorld, labels: ["first": "yes"])
            let writer = try await store.openWriter(defaultNS, ref: "dup", lease: nil, total: 0, expected: nil)
            try await writer.write(Known.helloWorld)
            let error = await #expect(throws: BerthError.self) { try await writer.commit(size: 11, expected: nil, labels: ["second": "yes"]) }
            #expect(error?.code == .alreadyExists)
            #expect(error?.message == "content \(Known.helloWorldSHA256): already exists")
            #expect(try await store.contentInfo(defaultNS, digest: Known.helloWorldSHA256).labels == ["first": "yes"], "the first commit stands")
            #expect(store.blobs.ingests().isEmpty, "the duplicate's data is dropped")
            #expect(try await store.ingestStatuses(defaultNS, filter: .all).isEmpty)
        }
    }

    /// After a commit refused as a duplicate, nothing of the ingest may remain: a leftover
    /// `ingests` row is invisible to Status/ListStatuses yet keeps the namespace from being
    /// deleted ("it still has ingests").
    @Test func refusedDuplicateCommitLeavesNoIngestRecord() async throws {
        try await withStore { (store, _) async throws in
            let space = ns("dupes")
            try await commitContent(store, space, Known.helloWorld)
            let writer = try await store.openWriter(space, ref: "dup", lease: nil, total: 0, expected: nil)
            #expect(try await ingestRecords(store, space) == ["dup"])
            try await writer.write(Known.helloWorld)
            _ = await #expect(throws: BerthError.self) { try await writer.commit(size: 11, expected: nil, labels: [:]) }
            // Regression: commit used to throw inside its write transaction, rolling back the
            // DELETE of the ingests row.
            #expect(try await ingestRecords(store, space) == [])
        }
    }

    @Test func updateLabels() async throws {
        try await withStore { (store, _) async throws in
            let digest = try await commitContent(store, defaultNS, Known.helloWorld, labels: ["a": "1", "b": "2"])
            let created = try await store.contentInfo(defaultNS, digest: digest)
            var info = try await store.updateContent(defaultNS, digest: digest, labels: ["a": "10", "c": "3"], paths: ["labels.a", "labels.b"])
            #expect(info.labels == ["a": "10"])
            #expect(info.updatedAt >= created.updatedAt)
            info = try await store.updateContent(defaultNS, digest: digest, labels: ["z": "26"], paths: [])
            #expect(info.labels == ["z": "26"])
            info = try await store.updateContent(defaultNS, digest: digest, labels: ["y": "25"], paths: ["labels"])
            #expect(info.labels == ["y": "25"])
            #expect(try await store.contentInfo(defaultNS, digest: digest).labels == ["y": "25"])

            let badPath = await #expect(throws: BerthError.self) {
                try await store.updateContent(defaultNS, digest: digest, labels: [:], paths: ["size"])
            }
            #expect(badPath?.code == .invalidArgument)
            #expect(badPath?.message.contains(#""size""#) == true)
            let tooBig = await #expect(throws: BerthError.self) {
                try await store.updateContent(defaultNS, digest: digest, labels: ["k": String(repeating: "v", count: 4096)], paths: [])
            }
            #expect(tooBig?.code == .invalidArgument)
            let missing = await #expect(throws: BerthError.self) {
                try await store.updateContent(ns("other"), digest: digest, labels: [:], paths: [])
            }
            #expect(missing?.code == .notFound)
        }
    }

    @Test func listWithFilters() async throws {
        try await withStore { (store, _) async throws in
            let a = try await commitContent(store, defaultNS, bytes("aaa"), labels: ["containerd.io/gc.root": "x"])
            let b = try await commitContent(store, defaultNS, bytes("bbbb"), labels: ["kind": "layer"])
            func digests(_ filter: String) async throws -> Set<Digest> {
                Set(try await store.contents(defaultNS, filter: Filter(parsing: [filter])).map(\.digest))
            }
            #expect(try await digests("digest==\(a)") == [a])
            #expect(try await digests("size==4") == [b])
            #expect(try await digests(#"labels."containerd.io/gc.root""#) == [a])
            #expect(try await digests("labels.kind==layer") == [b])
        }
    }

    @Test func deleteRemovesVisibilityNotBytes() async throws {
        let deletions = CallCounter()
        try await withStore(onDeletion: deletions.increment) { (store, _) async throws in
            let digest = try await commitContent(store, defaultNS, Known.helloWorld)
            try await store.deleteContent(defaultNS, digest: digest)
            #expect(deletions.value == 1)
            let error = await #expect(throws: BerthError.self) { try await store.contentInfo(defaultNS, digest: digest) }
            #expect(error?.code == .notFound)
            #expect(store.blobs.contains(digest), "garbage collection removes the bytes later")
            let again = await #expect(throws: BerthError.self) { try await store.deleteContent(defaultNS, digest: digest) }
            #expect(again?.code == .notFound)
        }
    }

    @Test func resumeThroughTheStore() async throws {
        try await withStore { (store, _) async throws in
            let first = try await store.openWriter(defaultNS, ref: "resumable", lease: nil, total: 11, expected: nil)
            try await first.write(bytes("hello "))
            first.close()
            let second = try await store.openWriter(defaultNS, ref: "resumable", lease: nil, total: 0, expected: nil)
            #expect(second.offset == 6)
            #expect(second.total == 11)
            try await second.write(bytes("world"))
            try await second.commit(size: 11, expected: Known.helloWorldSHA256, labels: [:])
            #expect(try await store.contentInfo(defaultNS, digest: Known.helloWorldSHA256).size == 11)
        }
    }

    @Test func truncateThroughTheStore() async throws {
        try await withStore { (store, _) async throws in
            let writer = try await store.openWriter(defaultNS, ref: "t", lease: nil, total: 0, expected: nil)
            try await writer.write(bytes("oops"))
            try await writer.truncate()
            #expect(writer.offset == 0)
            try await writer.write(Known.helloWorld)
            try await writer.commit(size: 11, expected: Known.helloWorldSHA256, labels: [:])
        }
    }

    @Test func secondWriterOnTheSameRefIsUnavailable() async throws {
        try await withStore { (store, _) async throws in
            let writer = try await store.openWriter(defaultNS, ref: "busy", lease: nil, total: 0, expected: nil)
            let error = await #expect(throws: BerthError.self) {
                try await store.openWriter(defaultNS, ref: "busy", lease: nil, total: 0, expected: nil)
            }
            #expect(error?.code == .unavailable)
            #expect(error?.message.contains("busy") == true)
            // The same ref in another namespace is another ingest.
            let other = try await store.openWriter(ns("other"), ref: "busy", lease: nil, total: 0, expected: nil)
            other.close()
            writer.close()
        }
    }
}

@Suite("MetadataStore: ingests")
struct IngestStoreTests {
    @Test func statusIsScopedByNamespace() async throws {
        try await withStore { (store, _) async throws in
            let writer = try await store.openWriter(ns("one"), ref: "layer", lease: nil, total: 100, expected: Known.helloWorldSHA256)
            try await writer.write(bytes("12345"))

            let status = try await store.ingestStatus(ns("one"), ref: "layer")
            #expect(status.ref == "layer")
            #expect(status.offset == 5)
            #expect(status.total == 100)

            let elsewhere = await #expect(throws: BerthError.self) { try await store.ingestStatus(ns("two"), ref: "layer") }
            #expect(elsewhere?.code == .notFound)
            #expect(elsewhere?.message == #"ingest ref "layer": not found"#)

            let statuses = try await store.ingestStatuses(ns("one"), filter: .all)
            #expect(statuses.map(\.ref) == ["layer"])
            #expect(statuses.first?.expected == Known.helloWorldSHA256, "the expected digest is reported")
            #expect(try await store.ingestStatus(ns("one"), ref: "layer").expected == Known.helloWorldSHA256)
            #expect(try await store.ingestStatuses(ns("two"), filter: .all).isEmpty)
            writer.close()
        }
    }

    @Test func statusesFilterOnRef() async throws {
        try await withStore { (store, _) async throws in
            for ref in ["layer-1", "layer-2", "config"] {
                let writer = try await store.openWriter(defaultNS, ref: ref, lease: nil, total: 0, expected: nil)
                writer.close()
            }
            func refs(_ filter: String) async throws -> [String] {
                try await store.ingestStatuses(defaultNS, filter: Filter(parsing: [filter])).map(\.ref)
            }
            #expect(try await store.ingestStatuses(defaultNS, filter: .all).map(\.ref) == ["config", "layer-1", "layer-2"])
            #expect(try await refs("ref==config") == ["config"])
            #expect(try await refs("ref~=^layer-") == ["layer-1", "layer-2"])
            #expect(try await refs("expected") == [], "only ref is a field")
        }
    }

    @Test func abortIsScopedByNamespace() async throws {
        try await withStore { (store, _) async throws in
            let writer = try await store.openWriter(ns("one"), ref: "r", lease: nil, total: 0, expected: nil)
            try await writer.write(bytes("data"))

            let busy = await #expect(throws: BerthError.self) { try await store.abortIngest(ns("one"), ref: "r") }
            #expect(busy?.code == .unavailable)
            writer.close()

            let elsewhere = await #expect(throws: BerthError.self) { try await store.abortIngest(ns("two"), ref: "r") }
            #expect(elsewhere?.code == .notFound)
            #expect(try await store.ingestStatus(ns("one"), ref: "r").offset == 4, "another namespace's abort left it alone")

            try await store.abortIngest(ns("one"), ref: "r")
            #expect(try await ingestRecords(store, ns("one")) == [])
            let gone = await #expect(throws: BerthError.self) { try await store.ingestStatus(ns("one"), ref: "r") }
            #expect(gone?.code == .notFound)
            #expect(store.blobs.ingests().isEmpty)
            let again = await #expect(throws: BerthError.self) { try await store.abortIngest(ns("one"), ref: "r") }
            #expect(again?.code == .notFound)
        }
    }

    @Test func abortedRefStartsOver() async throws {
        try await withStore { (store, _) async throws in
            let first = try await store.openWriter(defaultNS, ref: "r", lease: nil, total: 0, expected: nil)
            try await first.write(bytes("stale"))
            first.close()
            try await store.abortIngest(defaultNS, ref: "r")
            let second = try await store.openWriter(defaultNS, ref: "r", lease: nil, total: 0, expected: nil)
            defer { second.close() }
            #expect(second.offset == 0)
        }
    }
}

@Suite("MetadataStore: content under a lease")
struct ContentLeaseTests {
    @Test func ingestThenContentAreLeaseResources() async throws {
        try await withStore { (store, _) async throws in
            _ = try await store.createLease(defaultNS, id: "pull", labels: [:])
            let writer = try await store.openWriter(defaultNS, ref: "layer", lease: "pull", total: 0, expected: nil)
            #expect(writer.lease == "pull")
            #expect(try await store.leaseResources(defaultNS, lease: "pull") == [LeaseResource(id: "layer", type: "ingests")])
            try await writer.write(Known.helloWorld)
            try await writer.commit(size: 11, expected: nil, labels: [:])
            #expect(try await store.leaseResources(defaultNS, lease: "pull")
                    == [LeaseResource(id: Known.helloWorldSHA256.description, type: "content")])
        }
    }

    @Test func openWriterWithAMissingLeaseIsNotFound() async throws {
        try await withStore { (store, _) async throws in
            let error = await #expect(throws: BerthError.self) {
                try await store.openWriter(defaultNS, ref: "r", lease: "ghost", total: 0, expected: nil)
            }
            #expect(error?.code == .notFound)
            #expect(error?.message == #"lease "ghost": not found"#)
            #expect(try await store.ingestStatuses(defaultNS, filter: .all).isEmpty)
            #expect(try await ingestRecords(store, defaultNS) == [], "the record was rolled back with the lease check")
            #expect(store.blobs.ingests().isEmpty)
        }
    }

    @Test func abortDropsTheIngestResource() async throws {
        try await withStore { (store, _) async throws in
            _ = try await store.createLease(defaultNS, id: "pull", labels: [:])
            let writer = try await store.openWriter(defaultNS, ref: "layer", lease: "pull", total: 0, expected: nil)
            writer.close()
            try await store.abortIngest(defaultNS, ref: "layer")
            #expect(try await store.leaseResources(defaultNS, lease: "pull").isEmpty)
        }
    }

    @Test func visibleContentNamedAtOpenJoinsTheLease() async throws {
        try await withStore { (store, _) async throws in
            try await commitContent(store, defaultNS, Known.helloWorld)
            _ = try await store.createLease(defaultNS, id: "pull", labels: [:])
            let error = await #expect(throws: BerthError.self) {
                try await store.openWriter(defaultNS, ref: "r", lease: "pull", total: 11, expected: Known.helloWorldSHA256)
            }
            #expect(error?.code == .alreadyExists)
            #expect(try await store.leaseResources(defaultNS, lease: "pull")
                    == [LeaseResource(id: Known.helloWorldSHA256.description, type: "content")])
        }
    }

    /// containerd's metadata writer adds the content to the lease even when Commit finds it
    /// already exists (`addContentLease` after `ErrAlreadyExists`), so a pull under a lease
    /// protects every blob it touched.
    @Test func duplicateCommitUnderALeaseJoinsTheLease() async throws {
        try await withStore { (store, _) async throws in
            try await commitContent(store, defaultNS, Known.helloWorld)
            _ = try await store.createLease(defaultNS, id: "pull", labels: [:])
            let writer = try await store.openWriter(defaultNS, ref: "dup", lease: "pull", total: 0, expected: nil)
            try await writer.write(Known.helloWorld)
            let error = await #expect(throws: BerthError.self) { try await writer.commit(size: 11, expected: nil, labels: [:]) }
            #expect(error?.code == .alreadyExists)
            let resources = try await store.leaseResources(defaultNS, lease: "pull")
            #expect(!resources.contains(LeaseResource(id: "dup", type: "ingests")), "the ingest left the lease")
            #expect(resources == [LeaseResource(id: Known.helloWorldSHA256.description, type: "content")])
        }
    }

    @Test func sharedContentJoinsTheLease() async throws {
        try await withStore { (store, _) async throws in
            try await commitContent(store, ns("first"), Known.helloWorld)
            _ = try await store.createLease(ns("second"), id: "pull", labels: [:])
            _ = await #expect(throws: BerthError.self) {
                try await store.openWriter(ns("second"), ref: "r", lease: "pull", total: 11, expected: Known.helloWorldSHA256)
            }
            #expect(try await store.leaseResources(ns("second"), lease: "pull")
                    == [LeaseResource(id: Known.helloWorldSHA256.description, type: "content")])
        }
    }
}
