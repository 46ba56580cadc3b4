import BerthCore
@testable import BerthMetadata
import Testing

@Suite("MetadataStore: namespaces")
struct NamespaceStoreTests {
    @Test func createGetList() async throws {
        try await withStore { (store, _) async throws in
            let created = try await store.createNamespace(ns("moby"), labels: ["owner": "me"])
            #expect(created == NamespaceInfo(name: "moby", labels: ["owner": "me"]))
            _ = try await store.createNamespace(ns("k8s.io"), labels: [:])
            #expect(try await store.namespace(ns("moby")).labels == ["owner": "me"])
            #expect(try await store.namespaces().map(\.name) == ["k8s.io", "moby"])
        }
    }

    @Test func createTwiceIsAlreadyExists() async throws {
        try await withStore { (store, _) async throws in
            _ = try await store.createNamespace(ns("moby"), labels: [:])
            let error = await #expect(throws: BerthError.self) { try await store.createNamespace(ns("moby"), labels: [:]) }
            #expect(error?.code == .alreadyExists)
            #expect(error?.message == "namespace moby: already exists")
        }
    }

    @Test func createRefusesOversizedLabels() async throws {
        try await withStore { (store, _) async throws in
            let error = await #expect(throws: BerthError.self) {
                try await store.createNamespace(ns("big"), labels: ["k": String(repeating: "v", count: 5000)])
            }
            #expect(error?.code == .invalidArgument)
            #expect(try await store.namespaces().isEmpty)
        }
    }

    @Test func getMissingIsNotFound() async throws {
        try await withStore { (store, _) async throws in
            let error = await #expect(throws: BerthError.self) { try await store.namespace(ns("nope")) }
            #expect(error?.code == .notFound)
            #expect(error?.message.contains("nope") == true)
        }
    }

    @Test func updateLabels() async throws {
        try await withStore { (store, _) async throws in
            _ = try await store.createNamespace(ns("moby"), labels: ["a": "1", "b": "2"])
            // No paths: replace.
            var info = try await store.updateNamespace(ns("moby"), labels: ["c": "3"], paths: [])
            #expect(info.labels == ["c": "3"])
            // labels.<key>: set one, remove one that the update omits.
            info = try await store.updateNamespace(ns("moby"), labels: ["d": "4"], paths: ["labels.d", "labels.c"])
            #expect(info.labels == ["d": "4"])
            // labels: replace all.
            info = try await store.updateNamespace(ns("moby"), labels: ["e": "5"], paths: ["labels"])
            #expect(info.labels == ["e": "5"])
            #expect(try await store.namespace(ns("moby")).labels == ["e": "5"])
        }
    }

    @Test func updateUnknownPathIsInvalidArgument() async throws {
        try await withStore { (store, _) async throws in
            _ = try await store.createNamespace(ns("moby"), labels: ["a": "1"])
            let error = await #expect(throws: BerthError.self) {
                try await store.updateNamespace(ns("moby"), labels: [:], paths: ["name"])
            }
            #expect(error?.code == .invalidArgument)
            #expect(error?.message.contains(#""name""#) == true, "\(error?.message ?? "")")
            #expect(try await store.namespace(ns("moby")).labels == ["a": "1"])
        }
    }

    @Test func updateCreatesAMissingNamespace() async throws {
        try await withStore { (store, _) async throws in
            let info = try await store.updateNamespace(ns("fresh"), labels: ["x": "y"], paths: [])
            #expect(info.labels == ["x": "y"])
            #expect(try await store.namespace(ns("fresh")).labels == ["x": "y"])
        }
    }

    @Test func deleteEmpty() async throws {
        try await withStore { (store, _) async throws in
            _ = try await store.createNamespace(ns("moby"), labels: [:])
            try await store.deleteNamespace(ns("moby"))
            let error = await #expect(throws: BerthError.self) { try await store.namespace(ns("moby")) }
            #expect(error?.code == .notFound)
            let again = await #expect(throws: BerthError.self) { try await store.deleteNamespace(ns("moby")) }
            #expect(again?.code == .notFound)
        }
    }

    @Test func deleteNonEmptyNamesWhatItHolds() async throws {
        try await withStore { (store, _) async throws in
            let moby = ns("moby")
            _ = try await store.createImage(moby, sampleImage("img"))
            _ = try await store.createContainer(moby, sampleContainer("c1"))
            try await commitContent(store, moby, bytes("blob"))

            let error = await #expect(throws: BerthError.self) { try await store.deleteNamespace(moby) }
            #expect(error?.code == .failedPrecondition)
            #expect(error?.message == #"namespace "moby" must be empty, but it still has images, blobs, containers"#)
            #expect(try await store.namespace(moby).name == "moby", "still there")

            try await store.deleteImage(moby, name: "img")
            let fewer = await #expect(throws: BerthError.self) { try await store.deleteNamespace(moby) }
            #expect(fewer?.message == #"namespace "moby" must be empty, but it still has blobs, containers"#)
        }
    }

    /// containerd 1.6 (`namespaceStore.listNs`) refuses only for images, blobs, containers and
    /// snapshots; leases and ingests go with the namespace's bucket.
    @Test func leasesAndIngestsDoNotBlockDeletion() async throws {
        try await withStore { (store, _) async throws in
            let moby = ns("moby")
            _ = try await store.createLease(moby, id: "l1", labels: [:])
            let writer = try await store.openWriter(moby, ref: "r", lease: nil, total: 0, expected: nil)
            writer.close()
            try await store.deleteNamespace(moby)
            let gone = await #expect(throws: BerthError.self) { try await store.namespace(moby) }
            #expect(gone?.code == .notFound)
        }
    }

    @Test func objectsCreateTheirNamespace() async throws {
        try await withStore { (store, _) async throws in
            _ = try await store.createImage(ns("implicit"), sampleImage("img"))
            #expect(try await store.namespaces().map(\.name) == ["implicit"])
            #expect(try await store.namespace(ns("implicit")).labels == [:])
        }
    }
}
