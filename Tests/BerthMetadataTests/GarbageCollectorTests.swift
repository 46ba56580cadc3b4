import BerthContent
import BerthCore
@testable import BerthMetadata
import Foundation
import Logging
import Testing

private struct ManifestDocument: Encodable {
    var schemaVersion = 2
    var mediaType = MediaType.ociManifest
    var config: Descriptor
    var layers: [Descriptor]
}

private struct IndexDocument: Encodable {
    var schemaVersion = 2
    var mediaType = MediaType.ociIndex
    var manifests: [Descriptor]
}

private func json(_ value: some Encodable) throws -> [UInt8] {
    Array(try JSONEncoder().encode(value))
}

/// Commits `data` and returns its descriptor.
private func put(_ store: MetadataStore, _ namespace: Namespace, _ data: [UInt8], _ mediaType: String,
                 labels: [String: String] = [:], lease: String? = nil) async throws -> Descriptor {
    let digest = try await commitContent(store, namespace, data, lease: lease, labels: labels)
    return Descriptor(mediaType: mediaType, digest: digest, size: Int64(data.count))
}

private func collector(_ store: MetadataStore) -> GarbageCollector {
    GarbageCollector(store: store, logger: Logger(label: "berth.test.gc"))
}

private func visible(_ store: MetadataStore, _ namespace: Namespace) async throws -> Set<Digest> {
    Set(try await store.contents(namespace, filter: .all).map(\.digest))
}

private typealias GCResult = GarbageCollector.Result

private func result(rows: Int = 0, blobs: Int = 0, leases: Int = 0, ingests: Int = 0) -> GCResult {
    var result = GCResult()
    result.contentRowsRemoved = rows
    result.blobsRemoved = blobs
    result.leasesExpired = leases
    result.ingestsRemoved = ingests
    return result
}

@Suite("GarbageCollector")
struct GarbageCollectorTests {
    @Test func nothingToCollect() async throws {
        try await withStore { (store, _) async throws in
            #expect(try await collector(store).collect() == GCResult())
        }
    }

    @Test func imageKeepsItsManifestConfigAndLayers() async throws {
        try await withStore { (store, _) async throws in
            let config = try await put(store, defaultNS, bytes(#"{"architecture":"amd64","os":"linux"}"#), MediaType.ociConfig)
            let layer1 = try await put(store, defaultNS, bytes("layer one"), MediaType.ociLayerGzip)
            let layer2 = try await put(store, defaultNS, bytes("layer two"), MediaType.ociLayer)
            let manifest = try await put(store, defaultNS, try json(ManifestDocument(config: config, layers: [layer1, layer2])), MediaType.ociManifest)
            let orphan = try await put(store, defaultNS, bytes("nobody wants me"), MediaType.ociLayer)
            _ = try await store.createImage(defaultNS, Image(name: "img", target: manifest))

            let gc = collector(store)
            #expect(try await gc.collect() == result(rows: 1, blobs: 1))
            let kept: Set = [config.digest, layer1.digest, layer2.digest, manifest.digest]
            #expect(try await visible(store, defaultNS) == kept)
            #expect(Set(store.blobs.allBlobs()) == kept)
            #expect(!store.blobs.contains(orphan.digest))

            #expect(try await gc.collect() == GCResult(), "a second pass finds nothing")

            try await store.deleteImage(defaultNS, name: "img")
            #expect(try await gc.collect() == result(rows: 4, blobs: 4))
            #expect(store.blobs.allBlobs().isEmpty)
        }
    }

    @Test func indexKeepsItsManifestsAndTheirChildren() async throws {
        try await withStore { (store, _) async throws in
            let configA = try await put(store, defaultNS, bytes(#"{"architecture":"amd64"}"#), MediaType.ociConfig)
            let layerA = try await put(store, defaultNS, bytes("amd64 layer"), MediaType.ociLayerGzip)
            let manifestA = try await put(store, defaultNS, try json(ManifestDocument(config: configA, layers: [layerA])), MediaType.ociManifest)
            let configB = try await put(store, defaultNS, bytes(#"{"architecture":"arm64"}"#), MediaType.dockerConfig)
            let layerB = try await put(store, defaultNS, bytes("arm64 layer"), MediaType.dockerLayerGzip)
            let manifestB = try await put(store, defaultNS,
                                          try json(ManifestDocument(mediaType: MediaType.dockerManifest, config: configB, layers: [layerB])),
                                          MediaType.dockerManifest)
            let index = try await put(store, defaultNS, try json(IndexDocument(manifests: [manifestA, manifestB])), MediaType.ociIndex)
            // A manifest no index names, with its own config: both garbage.
            let configC = try await put(store, defaultNS, bytes(#"{"architecture":"s390x"}"#), MediaType.ociConfig)
            let manifestC = try await put(store, defaultNS, try json(ManifestDocument(config: configC, layers: [layerA])), MediaType.ociManifest)
            _ = try await store.createImage(defaultNS, Image(name: "multi", target: index))

            #expect(try await collector(store).collect() == result(rows: 2, blobs: 2))
            let kept: Set = [index.digest, manifestA.digest, configA.digest, layerA.digest,
                             manifestB.digest, configB.digest, layerB.digest]
            #expect(try await visible(store, defaultNS) == kept)
            #expect(!store.blobs.contains(manifestC.digest))
            #expect(!store.blobs.contains(configC.digest))
        }
    }

    @Test func dockerManifestListIsFollowed() async throws {
        try await withStore { (store, _) async throws in
            let config = try await put(store, defaultNS, bytes("{}"), MediaType.dockerConfig)
            let manifest = try await put(store, defaultNS, try json(ManifestDocument(mediaType: MediaType.dockerManifest, config: config, layers: [])),
                                         MediaType.dockerManifest)
            let list = try await put(store, defaultNS, try json(IndexDocument(mediaType: MediaType.dockerManifestList, manifests: [manifest])),
                                     MediaType.dockerManifestList)
            _ = try await store.createImage(defaultNS, Image(name: "docker", target: list))
            #expect(try await collector(store).collect() == GCResult())
            #expect(try await visible(store, defaultNS) == [config.digest, manifest.digest, list.digest])
        }
    }

    @Test func imageTargetThatIsNotJSONHasNoChildren() async throws {
        try await withStore { (store, _) async throws in
            let target = try await put(store, defaultNS, bytes("not json at all"), MediaType.ociManifest)
            let broken = try await put(store, defaultNS, bytes(#"{"config": {"digest": "sha256:nothex"}}"#), MediaType.ociManifest)
            let other = try await put(store, defaultNS, bytes("other"), MediaType.ociLayer)
            _ = try await store.createImage(defaultNS, Image(name: "a", target: target))
            _ = try await store.createImage(defaultNS, Image(name: "b", target: broken))
            #expect(try await collector(store).collect() == result(rows: 1, blobs: 1))
            #expect(try await visible(store, defaultNS) == [target.digest, broken.digest])
            #expect(!store.blobs.contains(other.digest))
        }
    }

    @Test func configAndLayersAreNotLookedInto() async throws {
        try await withStore { (store, _) async throws in
            let hidden = try await put(store, defaultNS, bytes("hidden"), MediaType.ociLayer)
            // A "config" that happens to look like a manifest does not make its references roots.
            let trickyConfig = try await put(store, defaultNS,
                                             try json(ManifestDocument(config: hidden, layers: [])), MediaType.ociConfig)
            let manifest = try await put(store, defaultNS, try json(ManifestDocument(config: trickyConfig, layers: [])), MediaType.ociManifest)
            _ = try await store.createImage(defaultNS, Image(name: "img", target: manifest))
            #expect(try await collector(store).collect() == result(rows: 1, blobs: 1))
            #expect(!store.blobs.contains(hidden.digest))
        }
    }

    @Test func gcRootKeepsContent() async throws {
        try await withStore { (store, _) async throws in
            let root = try await put(store, defaultNS, bytes("root"), MediaType.ociLayer, labels: [Labels.gcRoot: "2020-01-01T00:00:00Z"])
            let loose = try await put(store, defaultNS, bytes("loose"), MediaType.ociLayer)
            #expect(try await collector(store).collect() == result(rows: 1, blobs: 1))
            #expect(try await visible(store, defaultNS) == [root.digest])
            #expect(!store.blobs.contains(loose.digest))
        }
    }

    @Test func gcRefContentLabelsAreFollowed() async throws {
        try await withStore { (store, _) async throws in
            let deep = try await put(store, defaultNS, bytes("deep"), MediaType.ociLayer)
            let config = try await put(store, defaultNS, bytes("config"), MediaType.ociConfig,
                                       labels: ["containerd.io/gc.ref.content.x": deep.digest.description])
            let layer = try await put(store, defaultNS, bytes("layer"), MediaType.ociLayer)
            let unlabelled = try await put(store, defaultNS, bytes("unlabelled"), MediaType.ociLayer)
            _ = try await put(store, defaultNS, bytes("root"), MediaType.ociLayer, labels: [
                Labels.gcRoot: "",
                "containerd.io/gc.ref.content.config": config.digest.description,
                "containerd.io/gc.ref.content.l.0": layer.digest.description,
                "containerd.io/gc.ref.content.l.1": "sha256:" + String(repeating: "9", count: 64),  // not stored: ignored
            ])
            #expect(try await collector(store).collect() == result(rows: 1, blobs: 1))
            #expect(try await visible(store, defaultNS).isSuperset(of: [deep.digest, config.digest, layer.digest]))
            #expect(!store.blobs.contains(unlabelled.digest))
        }
    }

    @Test func imageTargetLabelsKeepContentTheJSONDoesNotName() async throws {
        try await withStore { (store, _) async throws in
            let config = try await put(store, defaultNS, bytes("{}"), MediaType.ociConfig)
            let extra = try await put(store, defaultNS, bytes("signature"), MediaType.ociLayer)
            let manifest = try await put(store, defaultNS, try json(ManifestDocument(config: config, layers: [])), MediaType.ociManifest,
                                         labels: ["containerd.io/gc.ref.content.sig": extra.digest.description])
            _ = try await store.createImage(defaultNS, Image(name: "img", target: manifest))
            #expect(try await collector(store).collect() == GCResult())
            #expect(try await visible(store, defaultNS) == [config.digest, extra.digest, manifest.digest])
        }
    }

    /// containerd's GC also follows the gc.ref.content labels of the image record itself.
    @Test func imageLabelsAreRoots() async throws {
        try await withStore { (store, _) async throws in
            let config = try await put(store, defaultNS, bytes("{}"), MediaType.ociConfig)
            let attached = try await put(store, defaultNS, bytes("attestation"), MediaType.ociLayer)
            let manifest = try await put(store, defaultNS, try json(ManifestDocument(config: config, layers: [])), MediaType.ociManifest)
            _ = try await store.createImage(defaultNS, Image(name: "img", labels: ["containerd.io/gc.ref.content.att": attached.digest.description],
                                                             target: manifest))
            #expect(try await collector(store).collect() == GCResult())
            #expect(try await visible(store, defaultNS) == [config.digest, attached.digest, manifest.digest])
        }
    }

    @Test func containerLabelsAreRoots() async throws {
        try await withStore { (store, _) async throws in
            let checkpoint = try await put(store, defaultNS, bytes("checkpoint"), MediaType.ociLayer)
            let loose = try await put(store, defaultNS, bytes("loose"), MediaType.ociLayer)
            // The same bytes in another namespace are not held by this namespace's container.
            _ = try await put(store, ns("other"), bytes("checkpoint"), MediaType.ociLayer)
            _ = try await store.createContainer(defaultNS, sampleContainer("c1", labels: [
                "containerd.io/gc.ref.content.checkpoint": checkpoint.digest.description,
            ]))
            #expect(try await collector(store).collect() == result(rows: 2, blobs: 1))
            #expect(try await visible(store, defaultNS) == [checkpoint.digest])
            #expect(try await visible(store, ns("other")).isEmpty)
            #expect(store.blobs.contains(checkpoint.digest))
            #expect(!store.blobs.contains(loose.digest))
        }
    }

    @Test func leaseKeepsContentUntilDeleted() async throws {
        try await withStore { (store, _) async throws in
            _ = try await store.createLease(defaultNS, id: "pull", labels: [:])
            let held = try await put(store, defaultNS, bytes("held"), MediaType.ociLayer, lease: "pull")
            let gc = collector(store)
            #expect(try await gc.collect() == GCResult())
            #expect(try await visible(store, defaultNS) == [held.digest])

            try await store.deleteLease(defaultNS, id: "pull")
            #expect(try await gc.collect() == result(rows: 1, blobs: 1))
            #expect(try await visible(store, defaultNS).isEmpty)
            #expect(store.blobs.allBlobs().isEmpty)
        }
    }

    @Test func leaseResourceAddedByHandKeepsContent() async throws {
        try await withStore { (store, _) async throws in
            let content = try await put(store, defaultNS, bytes("content"), MediaType.ociLayer)
            _ = try await store.createLease(defaultNS, id: "keep", labels: [:])
            try await store.addLeaseResource(defaultNS, lease: "keep", LeaseResource(id: content.digest.description, type: "content"))
            let gc = collector(store)
            #expect(try await gc.collect() == GCResult())
            try await store.deleteLeaseResource(defaultNS, lease: "keep", LeaseResource(id: content.digest.description, type: "content"))
            #expect(try await gc.collect() == result(rows: 1, blobs: 1))
        }
    }

    @Test func expiredLeasesAreDeletedAndTheirContentCollected() async throws {
        try await withStore { (store, _) async throws in
            let expiries = ["2001-02-03T04:05:06Z", "2001-02-03T04:05:06.789Z", "2001-02-03T04:05:06+02:00"]
            var expiredContent: [Digest] = []
            for (n, expiry) in expiries.enumerated() {
                _ = try await store.createLease(defaultNS, id: "old-\(n)", labels: [Labels.gcExpire: expiry])
                expiredContent.append(try await put(store, defaultNS, bytes("old \(n)"), MediaType.ociLayer, lease: "old-\(n)").digest)
            }
            _ = try await store.createLease(defaultNS, id: "future", labels: [Labels.gcExpire: "2999-01-01T00:00:00Z"])
            let future = try await put(store, defaultNS, bytes("future"), MediaType.ociLayer, lease: "future")
            _ = try await store.createLease(defaultNS, id: "unparseable", labels: [Labels.gcExpire: "tomorrow"])
            let unparseable = try await put(store, defaultNS, bytes("unparseable"), MediaType.ociLayer, lease: "unparseable")

            #expect(try await collector(store).collect() == result(rows: 3, blobs: 3, leases: 3))
            #expect(Set(try await store.leases(defaultNS, filter: .all).map(\.id)) == ["future", "unparseable"])
            #expect(try await visible(store, defaultNS) == [future.digest, unparseable.digest])
            for digest in expiredContent { #expect(!store.blobs.contains(digest)) }
        }
    }

    @Test func blobIsDeletedOnlyWhenNoNamespaceNamesIt() async throws {
        try await withStore { (store, _) async throws in
            let kept = try await put(store, ns("first"), Known.helloWorld, MediaType.ociLayer, labels: [Labels.gcRoot: "x"])
            _ = try await put(store, ns("second"), Known.helloWorld, MediaType.ociLayer)
            let gc = collector(store)
            #expect(try await gc.collect() == result(rows: 1, blobs: 0))
            #expect(try await visible(store, ns("second")).isEmpty)
            #expect(try await visible(store, ns("first")) == [kept.digest])
            #expect(try store.blobs.readAll(kept.digest) == Known.helloWorld)

            _ = try await store.updateContent(ns("first"), digest: kept.digest, labels: [:], paths: [])
            #expect(try await gc.collect() == result(rows: 1, blobs: 1))
            #expect(!store.blobs.contains(kept.digest))
        }
    }

    @Test func referencesDoNotCrossNamespaces() async throws {
        try await withStore { (store, _) async throws in
            let config = try await put(store, ns("second"), bytes("{}"), MediaType.ociConfig)
            let manifest = try await put(store, ns("second"), try json(ManifestDocument(config: config, layers: [])), MediaType.ociManifest)
            // The image is in "first", which holds neither blob.
            _ = try await store.createImage(ns("first"), Image(name: "img", target: manifest))
            #expect(try await collector(store).collect() == result(rows: 2, blobs: 2))
            #expect(try await store.image(ns("first"), name: "img").target == manifest, "images themselves are never collected")
        }
    }

    @Test func blobsWithoutAnyRowAreRemoved() async throws {
        try await withStore { (store, _) async throws in
            let writer = try store.blobs.openIngest(key: "direct", ref: "direct", total: 0)
            try writer.write(Known.helloWorld)
            #expect(try store.blobs.install(writer.verify(size: 11, expected: nil)))
            writer.close()
            #expect(try await collector(store).collect() == result(blobs: 1))
            #expect(store.blobs.allBlobs().isEmpty)
        }
    }

    @Test func ingestsInProgressAreNeverRemoved() async throws {
        try await withStore { (store, _) async throws in
            let writer = try await store.openWriter(defaultNS, ref: "in-progress", lease: nil, total: 0, expected: nil)
            try await writer.write(bytes("partial"))
            // An ingest directory with no record (a crash between directory and row), but locked.
            let orphan = try store.blobs.openIngest(key: "orphan", ref: "orphan", total: 0)
            try orphan.write(bytes("x"))

            let gc = collector(store)
            #expect(try await gc.collect() == GCResult())
            #expect(try await store.ingestStatus(defaultNS, ref: "in-progress").offset == 7)
            #expect(store.blobs.ingestStatus(key: "orphan") != nil)

            orphan.close()
            writer.close()
            #expect(try await gc.collect() == result(ingests: 1), "an unlocked ingest without a record is a leftover")
            #expect(store.blobs.ingestStatus(key: "orphan") == nil)
            #expect(try await store.ingestStatus(defaultNS, ref: "in-progress").offset == 7, "a recorded ingest stays for resuming")

            let resumed = try await store.openWriter(defaultNS, ref: "in-progress", lease: nil, total: 0, expected: nil)
            #expect(resumed.offset == 7)
            resumed.close()
        }
    }

    /// IngestWriter makes the directory and its `ref` file before `data`; a crash in between
    /// leaves a directory that no writer holds and no record names.
    @Test func ingestDirectoryWithoutDataIsALeftover() async throws {
        try await withStore { (store, _) async throws in
            let leftover = "\(store.blobs.root)/ingest/crashed"
            #expect(mkdir(leftover, 0o700) == 0)
            #expect(FileManager.default.createFile(atPath: "\(leftover)/ref", contents: Data("r".utf8)))
            _ = try await collector(store).collect()
            #expect(!FileManager.default.fileExists(atPath: leftover))
        }
    }

    /// An interrupted ingest no lease holds stays a day for its client to resume, then goes.
    @Test func staleUnleasedIngestsExpire() async throws {
        try await withStore { (store, _) async throws in
            _ = try await store.createLease(defaultNS, id: "pull", labels: [:])
            for (ref, lease) in [("stale", nil), ("fresh", nil), ("held", "pull")] as [(String, String?)] {
                let writer = try await store.openWriter(defaultNS, ref: ref, lease: lease, total: 0, expected: nil)
                try await writer.write(bytes("partial"))
                writer.close()
            }
            let old = Date(timeIntervalSinceNow: -25 * 3600)
            for ref in ["stale", "held"] {
                let data = "\(store.blobs.root)/ingest/\(BlobStore.ingestKey(namespace: defaultNS.name, ref: ref))/data"
                try FileManager.default.setAttributes([.modificationDate: old], ofItemAtPath: data)
            }
            _ = try await collector(store).collect()
            let left = try await store.ingestStatuses(defaultNS, filter: .all).map(\.ref)
            #expect(left == ["fresh", "held"])
            #expect(!FileManager.default.fileExists(atPath: "\(store.blobs.root)/ingest/\(BlobStore.ingestKey(namespace: defaultNS.name, ref: "stale"))"))
        }
    }

    @Test func scheduledCollectionRuns() async throws {
        try await withStore { (store, _) async throws in
            let loose = try await put(store, defaultNS, bytes("loose"), MediaType.ociLayer)
            let gc = collector(store)
            gc.schedule(after: .milliseconds(5))
            gc.schedule(after: .milliseconds(5))  // coalesced with the pending one
            let deadline = ContinuousClock.now + .seconds(10)
            // Wait for the transaction to commit, not just for the file to go, so the store is idle
            // when the test closes it.
            while try await !visible(store, defaultNS).isEmpty, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(!store.blobs.contains(loose.digest))
            #expect(try await visible(store, defaultNS).isEmpty)
        }
    }
}
