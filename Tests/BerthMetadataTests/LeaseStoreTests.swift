import BerthCore
@testable import BerthMetadata
import Testing

@Suite("MetadataStore: leases")
struct LeaseStoreTests {
    @Test func createAndList() async throws {
        try await withStore { (store, _) async throws in
            let before = Timestamp.now
            let lease = try await store.createLease(defaultNS, id: "pull-1", labels: ["purpose": "pull"])
            #expect(lease.id == "pull-1")
            #expect(lease.labels == ["purpose": "pull"])
            #expect(lease.createdAt >= before)
            let listed = try await store.leases(defaultNS, filter: .all)
            #expect(listed == [lease])
            #expect(try await store.leases(ns("other"), filter: .all).isEmpty)
        }
    }

    @Test func emptyIDIsGenerated() async throws {
        try await withStore { (store, _) async throws in
            let a = try await store.createLease(defaultNS, id: "", labels: [:])
            let b = try await store.createLease(defaultNS, id: "", labels: [:])
            #expect(!a.id.isEmpty)
            #expect(!b.id.isEmpty)
            #expect(a.id != b.id)
            #expect(Set(try await store.leases(defaultNS, filter: .all).map(\.id)) == [a.id, b.id])
        }
    }

    @Test func clientStyleIDsAreAccepted() async throws {
        try await withStore { (store, _) async throws in
            // ctr and the Go client make ids like these.
            for id in ["1690000000123456789-a_-bZ", "abc==", "x.y-z_1"] {
                _ = try await store.createLease(defaultNS, id: id, labels: [:])
            }
            #expect(try await store.leases(defaultNS, filter: .all).count == 3)
        }
    }

    @Test(arguments: ["tab\there", "nl\n", String(repeating: "x", count: 257)])
    func invalidIDs(id: String) async throws {
        try await withStore { (store, _) async throws in
            let error = await #expect(throws: BerthError.self) { try await store.createLease(defaultNS, id: id, labels: [:]) }
            #expect(error?.code == .invalidArgument)
            #expect(error?.message.hasPrefix("lease id") == true, "\(error?.message ?? "")")
        }
    }

    @Test func createTwiceIsAlreadyExists() async throws {
        try await withStore { (store, _) async throws in
            _ = try await store.createLease(defaultNS, id: "l", labels: [:])
            let error = await #expect(throws: BerthError.self) { try await store.createLease(defaultNS, id: "l", labels: [:]) }
            #expect(error?.code == .alreadyExists)
            #expect(error?.message == #"lease "l": already exists"#)
            _ = try await store.createLease(ns("other"), id: "l", labels: [:])
        }
    }

    @Test func oversizedLabelsAreRefused() async throws {
        try await withStore { (store, _) async throws in
            let error = await #expect(throws: BerthError.self) {
                try await store.createLease(defaultNS, id: "l", labels: ["k": String(repeating: "v", count: 4096)])
            }
            #expect(error?.code == .invalidArgument)
        }
    }

    @Test func listWithFilters() async throws {
        try await withStore { (store, _) async throws in
            _ = try await store.createLease(defaultNS, id: "a", labels: ["kind": "pull"])
            _ = try await store.createLease(defaultNS, id: "b", labels: ["kind": "build", "containerd.io/gc.expire": "2999-01-01T00:00:00Z"])
            _ = try await store.createLease(defaultNS, id: "c", labels: [:])
            func ids(_ filters: String...) async throws -> Set<String> {
                Set(try await store.leases(defaultNS, filter: Filter(parsing: filters)).map(\.id))
            }
            #expect(try await ids("id==a") == ["a"])
            #expect(try await ids("labels.kind") == ["a", "b"])
            #expect(try await ids("labels.kind==build") == ["b"])
            #expect(try await ids(#"labels."containerd.io/gc.expire""#) == ["b"])
            #expect(try await ids("id==a", "id==c") == ["a", "c"])
            #expect(try await ids("id~=^[bc]$,labels.kind") == ["b"])
        }
    }

    @Test func deleteLease() async throws {
        let deletions = CallCounter()
        try await withStore(onDeletion: deletions.increment) { (store, _) async throws in
            _ = try await store.createLease(defaultNS, id: "l", labels: [:])
            try await store.deleteLease(defaultNS, id: "l")
            #expect(deletions.value == 1)
            #expect(try await store.leases(defaultNS, filter: .all).isEmpty)
            let error = await #expect(throws: BerthError.self) { try await store.deleteLease(defaultNS, id: "l") }
            #expect(error?.code == .notFound)
            #expect(error?.message == #"lease "l": not found"#)
        }
    }

    @Test func resourcesAddListDelete() async throws {
        try await withStore { (store, _) async throws in
            _ = try await store.createLease(defaultNS, id: "l", labels: [:])
            let content = LeaseResource(id: someDigest.description, type: "content")
            let ingest = LeaseResource(id: "ref-1", type: "ingests")
            let snapshot = LeaseResource(id: "key-1", type: "snapshots/overlayfs")
            for resource in [snapshot, content, ingest, content] {
                try await store.addLeaseResource(defaultNS, lease: "l", resource)
            }
            #expect(try await store.leaseResources(defaultNS, lease: "l") == [content, ingest, snapshot],
                    "sorted by type then id; adding twice keeps one")

            try await store.deleteLeaseResource(defaultNS, lease: "l", ingest)
            #expect(try await store.leaseResources(defaultNS, lease: "l") == [content, snapshot])
            // Deleting a resource the lease does not hold is not an error.
            try await store.deleteLeaseResource(defaultNS, lease: "l", ingest)
        }
    }

    @Test func resourcesAreScopedByNamespaceAndLease() async throws {
        try await withStore { (store, _) async throws in
            _ = try await store.createLease(defaultNS, id: "l", labels: [:])
            _ = try await store.createLease(defaultNS, id: "m", labels: [:])
            _ = try await store.createLease(ns("other"), id: "l", labels: [:])
            try await store.addLeaseResource(defaultNS, lease: "l", LeaseResource(id: "r", type: "ingests"))
            #expect(try await store.leaseResources(defaultNS, lease: "m").isEmpty)
            #expect(try await store.leaseResources(ns("other"), lease: "l").isEmpty)
        }
    }

    @Test func deletingALeaseDropsItsResources() async throws {
        try await withStore { (store, _) async throws in
            _ = try await store.createLease(defaultNS, id: "l", labels: [:])
            try await store.addLeaseResource(defaultNS, lease: "l", LeaseResource(id: "r", type: "ingests"))
            try await store.deleteLease(defaultNS, id: "l")
            let error = await #expect(throws: BerthError.self) { try await store.leaseResources(defaultNS, lease: "l") }
            #expect(error?.code == .notFound)
            _ = try await store.createLease(defaultNS, id: "l", labels: [:])
            #expect(try await store.leaseResources(defaultNS, lease: "l").isEmpty, "a new lease with the old id starts empty")
        }
    }

    @Test func resourcesOfAMissingLeaseAreNotFound() async throws {
        try await withStore { (store, _) async throws in
            let resource = LeaseResource(id: "r", type: "ingests")
            let add = await #expect(throws: BerthError.self) { try await store.addLeaseResource(defaultNS, lease: "ghost", resource) }
            #expect(add?.code == .notFound)
            #expect(add?.message == #"lease "ghost": not found"#)
            let list = await #expect(throws: BerthError.self) { try await store.leaseResources(defaultNS, lease: "ghost") }
            #expect(list?.code == .notFound)
            let delete = await #expect(throws: BerthError.self) { try await store.deleteLeaseResource(defaultNS, lease: "ghost", resource) }
            #expect(delete?.code == .notFound)
        }
    }

    @Test(arguments: [
        (LeaseResource(id: "x", type: "containers"), BerthError.Code.unimplemented, "resource type containers not supported yet"),
        (LeaseResource(id: "x", type: ""), .unimplemented, "not supported yet"),
        (LeaseResource(id: "x", type: "snapshots"), .invalidArgument, "invalid snapshot resource type"),
        (LeaseResource(id: "x", type: "snapshots/"), .invalidArgument, "invalid snapshot resource type"),
        (LeaseResource(id: "x", type: "snapshots/a/b"), .invalidArgument, "invalid snapshot resource type"),
        (LeaseResource(id: "x", type: "content/x"), .invalidArgument, "invalid resource type"),
        (LeaseResource(id: "", type: "snapshots/overlayfs"), .invalidArgument, "snapshot key must not be empty"),
        (LeaseResource(id: "", type: "ingests"), .invalidArgument, "ingest ref must not be empty"),
        (LeaseResource(id: "sha256:abc", type: "content"), .invalidArgument, "invalid checksum digest length"),
        (LeaseResource(id: "not-a-digest", type: "content"), .invalidArgument, "invalid checksum digest format"),
    ])
    func invalidResources(resource: LeaseResource, code: BerthError.Code, words: String) async throws {
        try await withStore { (store, _) async throws in
            _ = try await store.createLease(defaultNS, id: "l", labels: [:])
            let error = await #expect(throws: BerthError.self) { try await store.addLeaseResource(defaultNS, lease: "l", resource) }
            #expect(error?.code == code)
            #expect(error?.message.contains(words) == true, "\(error?.message ?? "") should contain \(words)")
            #expect(try await store.leaseResources(defaultNS, lease: "l").isEmpty)
        }
    }
}
