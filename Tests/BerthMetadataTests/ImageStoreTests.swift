import BerthCore
@testable import BerthMetadata
import Testing

@Suite("MetadataStore: images")
struct ImageStoreTests {
    @Test func createAndGet() async throws {
        try await withStore { (store, _) async throws in
            var image = sampleImage("docker.io/library/busybox:1", labels: ["k": "v"])
            image.target.annotations = ["org.opencontainers.image.ref.name": "1"]
            let before = Timestamp.now
            let created = try await store.createImage(defaultNS, image)
            #expect(created.createdAt >= before)
            #expect(created.updatedAt == created.createdAt)

            let fetched = try await store.image(defaultNS, name: "docker.io/library/busybox:1")
            #expect(fetched.name == image.name)
            #expect(fetched.labels == ["k": "v"])
            #expect(fetched.target == image.target)
            #expect(fetched.createdAt == created.createdAt)
        }
    }

    @Test func createTwiceIsAlreadyExists() async throws {
        try await withStore { (store, _) async throws in
            _ = try await store.createImage(defaultNS, sampleImage("img"))
            let error = await #expect(throws: BerthError.self) { try await store.createImage(defaultNS, sampleImage("img")) }
            #expect(error?.code == .alreadyExists)
            #expect(error?.message == #"image "img": already exists"#)
            // The same name in another namespace is another image.
            _ = try await store.createImage(ns("other"), sampleImage("img"))
        }
    }

    @Test func createValidates() async throws {
        try await withStore { (store, _) async throws in
            var noSize = sampleImage("img")
            noSize.target.size = 0
            var noMediaType = sampleImage("img")
            noMediaType.target.mediaType = ""
            let cases: [(Image, String)] = [
                (sampleImage(""), "name must not be empty"),
                (noSize, "Target.Size must be greater than zero"),
                (noMediaType, "Target.MediaType must be set"),
                (sampleImage("img", labels: ["k": String(repeating: "x", count: 4096)]), "maximum size"),
            ]
            for (image, words) in cases {
                let error = await #expect(throws: BerthError.self) { try await store.createImage(defaultNS, image) }
                #expect(error?.code == .invalidArgument)
                #expect(error?.message.contains(words) == true, "\(error?.message ?? "") should contain \(words)")
            }
            #expect(try await store.images(defaultNS, filter: .all).isEmpty)
        }
    }

    @Test func getMissingIsNotFound() async throws {
        try await withStore { (store, _) async throws in
            let error = await #expect(throws: BerthError.self) { try await store.image(defaultNS, name: "ghost") }
            #expect(error?.code == .notFound)
            #expect(error?.message == #"image "ghost": not found"#)
        }
    }

    @Test func listIsScopedSortedAndFiltered() async throws {
        try await withStore { (store, _) async throws in
            _ = try await store.createImage(defaultNS, sampleImage("c", labels: ["tier": "base"]))
            _ = try await store.createImage(defaultNS, sampleImage("a", mediaType: MediaType.ociManifest))
            _ = try await store.createImage(defaultNS, sampleImage("b", labels: ["tier": "app"], digest: otherDigest))
            _ = try await store.createImage(ns("other"), sampleImage("z", labels: ["tier": "base"]))

            #expect(try await store.images(defaultNS, filter: .all).map(\.name) == ["a", "b", "c"])
            #expect(try await store.images(ns("other"), filter: .all).map(\.name) == ["z"])
            #expect(try await store.images(ns("empty"), filter: .all).isEmpty)

            func names(_ filters: String...) async throws -> [String] {
                try await store.images(defaultNS, filter: Filter(parsing: filters)).map(\.name)
            }
            #expect(try await names("labels.tier") == ["b", "c"])
            #expect(try await names("labels.tier==base") == ["c"])
            #expect(try await names("name==a", "name==c") == ["a", "c"])
            #expect(try await names("target.mediatype==\(MediaType.ociManifest)") == ["a"])
            #expect(try await names("target.digest==\(otherDigest)") == ["b"])
            #expect(try await names("name~=^[ab]$,labels.tier") == ["b"])
        }
    }

    @Test func updateWithoutPathsReplacesLabelsAndTarget() async throws {
        try await withStore { (store, _) async throws in
            let created = try await store.createImage(defaultNS, sampleImage("img", labels: ["a": "1"]))
            var change = sampleImage("img", labels: ["b": "2"], digest: otherDigest, mediaType: MediaType.ociManifest)
            change.target.annotations = ["x": "y"]
            let updated = try await store.updateImage(defaultNS, change, paths: [])
            #expect(updated.labels == ["b": "2"])
            #expect(updated.target == change.target)
            #expect(updated.createdAt == created.createdAt)
            #expect(updated.updatedAt >= created.updatedAt)
            #expect(try await store.image(defaultNS, name: "img") == updated)
        }
    }

    @Test func updateLabelPaths() async throws {
        try await withStore { (store, _) async throws in
            _ = try await store.createImage(defaultNS, sampleImage("img", labels: ["a": "1", "b": "2"]))
            var change = sampleImage("img", labels: ["a": "10", "c": "3"], digest: otherDigest)

            var updated = try await store.updateImage(defaultNS, change, paths: ["labels.a"])
            #expect(updated.labels == ["a": "10", "b": "2"])
            #expect(updated.target.digest == someDigest, "target untouched without its path")

            updated = try await store.updateImage(defaultNS, change, paths: ["labels.b", "labels.c"])
            #expect(updated.labels == ["a": "10", "c": "3"], "labels.b absent from the update removes it")

            change.labels = ["only": "this"]
            updated = try await store.updateImage(defaultNS, change, paths: ["labels"])
            #expect(updated.labels == ["only": "this"])
        }
    }

    @Test func updateTargetAndAnnotationPaths() async throws {
        try await withStore { (store, _) async throws in
            var original = sampleImage("img", labels: ["keep": "me"])
            original.target.annotations = ["a": "1", "b": "2"]
            _ = try await store.createImage(defaultNS, original)

            var change = sampleImage("img", labels: [:], digest: otherDigest, mediaType: MediaType.ociManifest)
            change.target.annotations = ["a": "10", "c": "3"]

            var updated = try await store.updateImage(defaultNS, change, paths: ["annotations.a"])
            #expect(updated.target.annotations == ["a": "10", "b": "2"])
            #expect(updated.target.digest == someDigest)
            #expect(updated.labels == ["keep": "me"])

            updated = try await store.updateImage(defaultNS, change, paths: ["annotations"])
            #expect(updated.target.annotations == ["a": "10", "c": "3"])

            change.target.annotations = ["t": "1"]
            updated = try await store.updateImage(defaultNS, change, paths: ["target"])
            #expect(updated.target == change.target)
            #expect(updated.labels == ["keep": "me"], "labels untouched without their path")
            #expect(try await store.image(defaultNS, name: "img").target.digest == otherDigest)
        }
    }

    @Test(arguments: ["name", "createdat", "target.digest", "labelsx", "annotation"])
    func updateUnknownPathIsInvalidArgument(path: String) async throws {
        try await withStore { (store, _) async throws in
            _ = try await store.createImage(defaultNS, sampleImage("img", labels: ["a": "1"]))
            let error = await #expect(throws: BerthError.self) {
                try await store.updateImage(defaultNS, sampleImage("img", labels: ["a": "2"]), paths: ["labels.a", path])
            }
            #expect(error?.code == .invalidArgument)
            #expect(error?.message.contains(quoted(path)) == true, "\(error?.message ?? "")")
            #expect(try await store.image(defaultNS, name: "img").labels == ["a": "1"], "nothing applied")
        }
    }

    @Test func updateValidatesTheResult() async throws {
        try await withStore { (store, _) async throws in
            _ = try await store.createImage(defaultNS, sampleImage("img"))
            var change = sampleImage("img")
            change.target.size = 0
            let error = await #expect(throws: BerthError.self) { try await store.updateImage(defaultNS, change, paths: ["target"]) }
            #expect(error?.code == .invalidArgument)
        }
    }

    @Test func updateMissingIsNotFound() async throws {
        try await withStore { (store, _) async throws in
            let error = await #expect(throws: BerthError.self) { try await store.updateImage(defaultNS, sampleImage("ghost"), paths: []) }
            #expect(error?.code == .notFound)
            let empty = await #expect(throws: BerthError.self) { try await store.updateImage(defaultNS, sampleImage(""), paths: []) }
            #expect(empty?.code == .invalidArgument)
        }
    }

    @Test func delete() async throws {
        let deletions = CallCounter()
        try await withStore(onDeletion: deletions.increment) { (store, _) async throws in
            _ = try await store.createImage(defaultNS, sampleImage("img"))
            _ = try await store.createImage(ns("other"), sampleImage("img"))
            try await store.deleteImage(defaultNS, name: "img")
            #expect(deletions.value == 1)
            let error = await #expect(throws: BerthError.self) { try await store.image(defaultNS, name: "img") }
            #expect(error?.code == .notFound)
            #expect(try await store.image(ns("other"), name: "img").name == "img", "other namespace untouched")
            let again = await #expect(throws: BerthError.self) { try await store.deleteImage(defaultNS, name: "img") }
            #expect(again?.code == .notFound)
            #expect(deletions.value == 1, "a failed delete does not ask for collection")
        }
    }
}
