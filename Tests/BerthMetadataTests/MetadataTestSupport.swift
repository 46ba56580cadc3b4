import BerthContent
import BerthCore
@testable import BerthMetadata
import BerthTestSupport
import Foundation
import GRDB
import Synchronization
import Testing

/// Runs `body` with a MetadataStore over a real SQLite database and BlobStore in a fresh
/// temporary directory, closed and removed afterwards.
func withStore<T>(
    onDeletion: @escaping @Sendable () -> Void = {},
    _ body: (MetadataStore, TemporaryDirectory) async throws -> T
) async throws -> T {
    try await withTemporaryDirectory(prefix: "berth-meta") { dir in
        let blobs = try BlobStore(root: dir.appending("content"))
        let store = try MetadataStore(path: dir.appending("meta.db"), blobs: blobs, onDeletion: onDeletion)
        defer { try? store.close() }
        return try await body(store, dir)
    }
}

func ns(_ name: String) -> Namespace { try! Namespace(name) }

let defaultNS = Namespace.default

/// Writes and commits `bytes` in `namespace`, returning the digest the writer computed.
@discardableResult
func commitContent(
    _ store: MetadataStore, _ namespace: Namespace, _ bytes: [UInt8], ref: String? = nil,
    lease: String? = nil, labels: [String: String] = [:]
) async throws -> Digest {
    let writer = try await store.openWriter(namespace, ref: ref ?? "ref-\(UUID().uuidString)", lease: lease,
                                            total: Int64(bytes.count), expected: nil)
    try await writer.write(bytes)
    let digest = writer.digest
    try await writer.commit(size: Int64(bytes.count), expected: nil, labels: labels)
    return digest
}

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

/// Known digests (computed with coreutils' sha256sum).
enum Known {
    static let helloWorld = bytes("hello world")
    static let helloWorldSHA256 = try! Digest(parsing: "sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9")
}

func descriptor(_ digest: Digest, _ mediaType: String, size: Int64 = 1) -> Descriptor {
    Descriptor(mediaType: mediaType, digest: digest, size: size)
}

let someDigest = try! Digest(parsing: "sha256:" + String(repeating: "a", count: 64))
let otherDigest = try! Digest(parsing: "sha256:" + String(repeating: "b", count: 64))

func sampleImage(_ name: String, labels: [String: String] = [:], digest: Digest = someDigest,
                 mediaType: String = MediaType.ociIndex) -> Image {
    Image(name: name, labels: labels, target: Descriptor(mediaType: mediaType, digest: digest, size: 314))
}

let specType = "types.containerd.io/opencontainers/runtime-spec/1/Spec"

func sampleContainer(_ id: String, labels: [String: String] = [:]) -> Container {
    Container(id: id, labels: labels, image: "docker.io/library/busybox:latest", runtimeName: "io.containerd.runc.v2",
              spec: TypedValue(typeURL: specType, value: bytes("{\"ociVersion\":\"1.0.2\"}")),
              snapshotter: "overlayfs", snapshotKey: "\(id)-snapshot")
}

/// Counts calls of an `onDeletion` hook.
final class CallCounter: Sendable {
    private let count = Mutex(0)
    var value: Int { count.withLock { $0 } }
    @Sendable func increment() { count.withLock { $0 += 1 } }
}

/// The refs of the `ingests` rows a namespace holds, read straight from the database: rows
/// whose data is gone do not show in `ingestStatuses`.
func ingestRecords(_ store: MetadataStore, _ namespace: Namespace) async throws -> [String] {
    try await store.read { db in
        try String.fetchAll(db, sql: "SELECT ref FROM ingests WHERE namespace = ? ORDER BY ref", arguments: [namespace.name])
    }
}
