import BerthCore
@testable import BerthMetadata
import Testing

@Suite("MetadataStore: containers")
struct ContainerStoreTests {
    @Test func createAndGetRoundTripsEveryField() async throws {
        try await withStore { (store, _) async throws in
            var container = sampleContainer("c1", labels: ["app": "web"])
            container.runtimeOptions = TypedValue(typeURL: "containerd.runc.v1.Options", value: [0, 1, 2, 255])
            container.extensions = ["ext": TypedValue(typeURL: "example/Ext", value: [9, 8])]
            container.sandbox = "sandbox-1"
            let created = try await store.createContainer(defaultNS, container)
            #expect(created.updatedAt == created.createdAt)

            let fetched = try await store.container(defaultNS, id: "c1")
            #expect(fetched.id == "c1")
            #expect(fetched.labels == ["app": "web"])
            #expect(fetched.image == container.image)
            #expect(fetched.runtimeName == "io.containerd.runc.v2")
            #expect(fetched.runtimeOptions == container.runtimeOptions)
            #expect(fetched.spec == container.spec)
            #expect(fetched.snapshotter == "overlayfs")
            #expect(fetched.snapshotKey == "c1-snapshot")
            #expect(fetched.sandbox == "sandbox-1")
            #expect(fetched.extensions == container.extensions)
            #expect(fetched.createdAt == created.createdAt)
        }
    }

    @Test func specWithEmptyBytesIsStillASpec() async throws {
        try await withStore { (store, _) async throws in
            var container = sampleContainer("c1")
            container.spec = TypedValue(typeURL: specType, value: [])
            _ = try await store.createContainer(defaultNS, container)
            #expect(try await store.container(defaultNS, id: "c1").spec == TypedValue(typeURL: specType, value: []))
        }
    }

    @Test func createValidates() async throws {
        try await withStore { (store, _) async throws in
            var noRuntime = sampleContainer("c1")
            noRuntime.runtimeName = ""
            var noSpec = sampleContainer("c1")
            noSpec.spec = nil
            var keyWithoutSnapshotter = sampleContainer("c1")
            keyWithoutSnapshotter.snapshotter = ""
            let cases: [(Container, String)] = [
                (sampleContainer(""), "container id: identifier must not be empty"),
                (sampleContainer("bad/id"), "must match"),
                (sampleContainer("-leading"), "must match"),
                (noRuntime, "Runtime.Name must be set"),
                (noSpec, "Spec must be set"),
                (keyWithoutSnapshotter, "Snapshotter must be set if SnapshotKey is set"),
                (sampleContainer("c1", labels: ["k": String(repeating: "x", count: 4096)]), "maximum size"),
            ]
            for (container, words) in cases {
                let error = await #expect(throws: BerthError.self) { try await store.createContainer(defaultNS, container) }
                #expect(error?.code == .invalidArgument, "\(words)")
                #expect(error?.message.contains(words) == true, "\(error?.message ?? "") should contain \(words)")
            }
            #expect(try await store.containers(defaultNS, filter: .all).isEmpty)
        }
    }

    @Test func createTwiceIsAlreadyExists() async throws {
        try await withStore { (store, _) async throws in
            _ = try await store.createContainer(defaultNS, sampleContainer("c1"))
            let error = await #expect(throws: BerthError.self) { try await store.createContainer(defaultNS, sampleContainer("c1")) }
            #expect(error?.code == .alreadyExists)
            #expect(error?.message == #"container "c1": already exists"#)
        }
    }

    @Test func listIsScopedAndFiltered() async throws {
        try await withStore { (store, _) async throws in
            _ = try await store.createContainer(defaultNS, sampleContainer("b", labels: ["role": "db"]))
            _ = try await store.createContainer(defaultNS, sampleContainer("a", labels: ["role": "web"]))
            _ = try await store.createContainer(ns("other"), sampleContainer("c"))
            #expect(try await store.containers(defaultNS, filter: .all).map(\.id) == ["a", "b"])
            #expect(try await store.containers(defaultNS, filter: Filter(parsing: ["labels.role==db"])).map(\.id) == ["b"])
            #expect(try await store.containers(defaultNS, filter: Filter(parsing: ["runtime.name==io.containerd.runc.v2"])).map(\.id) == ["a", "b"])
            #expect(try await store.containers(ns("other"), filter: .all).map(\.id) == ["c"])
        }
    }

    @Test func fullReplaceUpdatesTheMutableFields() async throws {
        try await withStore { (store, _) async throws in
            let created = try await store.createContainer(defaultNS, sampleContainer("c1", labels: ["a": "1"]))
            var change = sampleContainer("c1", labels: ["b": "2"])
            change.image = "docker.io/library/alpine:3"
            change.spec = TypedValue(typeURL: specType, value: bytes("{}"))
            change.snapshotKey = "new-key"
            change.extensions = ["e": TypedValue(typeURL: "t", value: [1])]
            change.sandbox = "ignored"
            change.runtimeOptions = TypedValue(typeURL: "ignored", value: [])
            let updated = try await store.updateContainer(defaultNS, change, paths: [])
            #expect(updated.labels == ["b": "2"])
            #expect(updated.image == "docker.io/library/alpine:3")
            #expect(updated.spec == change.spec)
            #expect(updated.snapshotKey == "new-key")
            #expect(updated.extensions == change.extensions)
            #expect(updated.sandbox == "", "sandbox is not among the fields a full replace updates")
            #expect(updated.runtimeOptions == nil)
            #expect(updated.createdAt == created.createdAt)
            #expect(try await store.container(defaultNS, id: "c1") == updated)
        }
    }

    @Test func fullReplaceRefusesAChangedRuntime() async throws {
        try await withStore { (store, _) async throws in
            _ = try await store.createContainer(defaultNS, sampleContainer("c1"))
            var change = sampleContainer("c1")
            change.runtimeName = "io.containerd.runsc.v1"
            let error = await #expect(throws: BerthError.self) { try await store.updateContainer(defaultNS, change, paths: []) }
            #expect(error?.code == .invalidArgument)
            #expect(error?.message.contains("Runtime.Name field is immutable") == true, "\(error?.message ?? "")")
            #expect(try await store.container(defaultNS, id: "c1").runtimeName == "io.containerd.runc.v2")
        }
    }

    @Test func fullReplaceRefusesAChangedSnapshotter() async throws {
        try await withStore { (store, _) async throws in
            _ = try await store.createContainer(defaultNS, sampleContainer("c1"))
            var change = sampleContainer("c1")
            change.snapshotter = "native"
            let error = await #expect(throws: BerthError.self) { try await store.updateContainer(defaultNS, change, paths: []) }
            #expect(error?.code == .invalidArgument)
            #expect(error?.message.contains("Snapshotter field is immutable") == true, "\(error?.message ?? "")")
        }
    }

    @Test func pathsUpdateOnlyWhatTheyName() async throws {
        try await withStore { (store, _) async throws in
            var original = sampleContainer("c1", labels: ["a": "1", "b": "2"])
            original.extensions = ["x": TypedValue(typeURL: "x", value: [1]), "y": TypedValue(typeURL: "y", value: [2])]
            _ = try await store.createContainer(defaultNS, original)

            var change = sampleContainer("c1", labels: ["a": "10"])
            change.runtimeName = "ignored-with-paths"
            change.image = "changed"
            change.extensions = ["x": TypedValue(typeURL: "x2", value: [3])]

            var updated = try await store.updateContainer(defaultNS, change, paths: ["labels.a", "labels.b"])
            #expect(updated.labels == ["a": "10"])
            #expect(updated.image == original.image)
            #expect(updated.runtimeName == "io.containerd.runc.v2", "paths never touch the runtime")

            updated = try await store.updateContainer(defaultNS, change, paths: ["extensions.x", "extensions.y", "image"])
            #expect(updated.extensions == ["x": TypedValue(typeURL: "x2", value: [3])])
            #expect(updated.image == "changed")

            change.snapshotKey = "k2"
            updated = try await store.updateContainer(defaultNS, change, paths: ["snapshotkey"])
            #expect(updated.snapshotKey == "k2")
        }
    }

    @Test(arguments: ["runtime", "snapshotter", "id", "sandbox", "createdat"])
    func unknownOrImmutablePathIsInvalidArgument(path: String) async throws {
        try await withStore { (store, _) async throws in
            _ = try await store.createContainer(defaultNS, sampleContainer("c1", labels: ["a": "1"]))
            let error = await #expect(throws: BerthError.self) {
                try await store.updateContainer(defaultNS, sampleContainer("c1", labels: ["a": "2"]), paths: ["labels.a", path])
            }
            #expect(error?.code == .invalidArgument)
            #expect(error?.message.contains("cannot update \(quoted(path)) field") == true, "\(error?.message ?? "")")
            #expect(try await store.container(defaultNS, id: "c1").labels == ["a": "1"], "nothing applied")
        }
    }

    @Test func updateThatRemovesTheSpecIsRefused() async throws {
        try await withStore { (store, _) async throws in
            _ = try await store.createContainer(defaultNS, sampleContainer("c1"))
            var change = sampleContainer("c1")
            change.spec = nil
            let error = await #expect(throws: BerthError.self) { try await store.updateContainer(defaultNS, change, paths: ["spec"]) }
            #expect(error?.code == .invalidArgument)
            #expect(error?.message.contains("Spec must be set") == true)
        }
    }

    @Test func updateMissingIsNotFound() async throws {
        try await withStore { (store, _) async throws in
            let error = await #expect(throws: BerthError.self) {
                try await store.updateContainer(defaultNS, sampleContainer("ghost"), paths: [])
            }
            #expect(error?.code == .notFound)
            #expect(error?.message == #"container "ghost": not found"#)
        }
    }

    @Test func delete() async throws {
        let deletions = CallCounter()
        try await withStore(onDeletion: deletions.increment) { (store, _) async throws in
            _ = try await store.createContainer(defaultNS, sampleContainer("c1"))
            try await store.deleteContainer(defaultNS, id: "c1")
            #expect(deletions.value == 1)
            let error = await #expect(throws: BerthError.self) { try await store.container(defaultNS, id: "c1") }
            #expect(error?.code == .notFound)
            let again = await #expect(throws: BerthError.self) { try await store.deleteContainer(defaultNS, id: "c1") }
            #expect(again?.code == .notFound)
            // The id is free again.
            _ = try await store.createContainer(defaultNS, sampleContainer("c1"))
        }
    }
}
