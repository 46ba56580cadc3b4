import BerthArchive
import BerthCore
import BerthMetadata
import BerthSystem
import Glibc

/// Applies layers onto snapshot mounts and computes layers from two mounts: the work behind
/// containerd's diff service (its "walking" differ).
///
/// Apply avoids mounting where it can, as containerd does: a single bind mount is the snapshot's
/// own directory (native snapshots, and the first layer of an overlayfs chain), and a single
/// overlay mount with an `upperdir` is written through its upper directory, with whiteouts
/// stored the way overlayfs reads them. Anything else is mounted on a temporary directory.
public struct Differ: Sendable {
    let store: MetadataStore
    /// Where temporary mount points and diff output go (`<root>/tmp`).
    let scratch: String

    /// Creates the scratch directory, or cleans what a crash left in it: temporary mounts are
    /// unmounted (then their empty mount points removed) and partial diff output deleted.
    public init(store: MetadataStore, scratch: String) throws(BerthError) {
        self.store = store
        self.scratch = scratch
        try FileSystem.makeDirectories(scratch, mode: 0o700)
        for name in FileSystem.list(scratch) {
            let path = "\(scratch)/\(name)"
            if name.hasPrefix("mount-") {
                try? Mounter.unmountAll(path)
                _ = rmdir(path)   // fails, and keeps everything, if something is still mounted there
            } else {
                _ = unlink(path)
            }
        }
    }

    /// Applies the layer `layer` (a blob the namespace holds) onto `mounts` and returns the
    /// uncompressed layer's descriptor (`application/vnd.oci.image.layer.v1.tar`, its digest
    /// being the layer's diff ID).
    ///
    /// `notFound` if the namespace does not hold the blob; `unimplemented` for a media type that
    /// is not a layer; `invalidArgument` for unsafe or malformed archives or unusable mounts;
    /// `dataLoss` for corrupt compressed data; `resourceExhausted` when the disk is full;
    /// `cancelled` when `shouldContinue` turns false.
    public func apply(_ namespace: Namespace, layer: Descriptor, mounts: [Mount],
                      shouldContinue: @escaping @Sendable () -> Bool = { true }) async throws(BerthError) -> Descriptor {
        _ = try await store.contentInfo(namespace, digest: layer.digest)
        guard let compression = LayerCompression(mediaType: layer.mediaType) else {
            throw .unimplemented("layer \(layer.digest): unsupported media type \(layer.mediaType)")
        }
        let path = store.blobs.path(of: layer.digest)
        let scratch = self.scratch
        let result = try await runBlocking { () throws(BerthError) -> ApplyResult in
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else {
                if errno == ENOENT { throw .notFound("content \(layer.digest): not found") }
                throw errnoError("open layer \(layer.digest)")
            }
            defer { close(fd) }
            let target = try ApplyTarget(mounts)
            switch target {
            case .directory(let directory, let whiteouts, let lowers):
                return try LayerApplier.apply(from: fd, compression: compression, to: directory,
                                              options: ApplyOptions(whiteouts: whiteouts, lowerDirectories: lowers,
                                                                    shouldContinue: shouldContinue))
            case .mount(let mounts):
                return try Mounter.withTemporaryMount(mounts, under: scratch) { (root: String) throws(BerthError) -> ApplyResult in
                    try LayerApplier.apply(from: fd, compression: compression, to: root,
                                           options: ApplyOptions(whiteouts: .delete, shouldContinue: shouldContinue))
                }
            }
        }
        return Descriptor(mediaType: MediaType.ociLayer, digest: result.uncompressedDigest, size: result.uncompressedSize)
    }

    /// Where Apply writes.
    enum ApplyTarget {
        /// Write into this directory directly.
        case directory(String, ApplyOptions.Whiteouts, lowers: [String])
        /// Mount these on a temporary directory and write there.
        case mount([Mount])

        init(_ mounts: [Mount]) throws(BerthError) {
            guard !mounts.isEmpty else { throw .invalidArgument("apply: no mounts given") }
            if mounts.count == 1, let mount = mounts.first {
                if mount.isReadOnly { throw .invalidArgument("apply: the mount is read-only") }
                if mount.type == "bind" {
                    self = .directory(mount.source, .delete, lowers: [])
                    return
                }
                if mount.type == "overlay", let upper = mount.option("upperdir") {
                    let lowers = mount.option("lowerdir").map { $0.split(separator: ":").map(String.init) } ?? []
                    self = .directory(upper, .overlay, lowers: lowers)
                    return
                }
            }
            self = .mount(mounts)
        }
    }

    /// Computes the layer that turns the tree of `lower` (no mounts: an empty tree) into the tree
    /// of `upper`, stores it in the namespace's content under `ref` (a generated one if empty)
    /// with `labels` and `containerd.io/uncompressed`, and returns its descriptor.
    ///
    /// `mediaType` picks the compression: "" or an OCI/Docker gzip layer type (gzip), `+zstd`,
    /// or an uncompressed layer type; anything else is `invalidArgument`.
    public func diff(_ namespace: Namespace, lower: [Mount], upper: [Mount], mediaType requested: String, ref requestedRef: String,
                     labels: [String: String], lease: String?) async throws(BerthError) -> Descriptor {
        let mediaType = requested.isEmpty ? MediaType.ociLayerGzip : requested
        guard let compression = LayerCompression(mediaType: mediaType) else {
            // As containerd's differ: not implemented, so a chain of differs can fall back.
            throw .unimplemented("diff: unsupported media type \(mediaType)")
        }
        guard !upper.isEmpty else { throw .invalidArgument("diff: no upper mounts given") }
        let scratch = self.scratch
        let output = "\(scratch)/diff-\(UInt64.random(in: 0...UInt64.max))"
        defer { unlink(output) }
        let result = try await runBlocking { () throws(BerthError) -> DiffResult in
            let fd = open(output, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw errnoError("diff output \(output)") }
            defer { close(fd) }
            return try Self.withReadOnlyTree(lower, scratch: scratch) { (lowerRoot: String?) throws(BerthError) -> DiffResult in
                try Self.withReadOnlyTree(upper, scratch: scratch) { (upperRoot: String?) throws(BerthError) -> DiffResult in
                    try LayerDiffer.writeDiff(lower: lowerRoot, upper: upperRoot ?? "/nonexistent", compression: compression, to: fd)
                }
            }
        }
        var allLabels = labels
        allLabels[Labels.uncompressed] = result.uncompressedDigest.description
        let ref = requestedRef.isEmpty ? "diff-\(Timestamp.now.nanosecondsSinceEpoch)-\(UInt32.random(in: 0...UInt32.max))" : requestedRef
        let descriptor = Descriptor(mediaType: mediaType, digest: result.compressedDigest, size: result.compressedSize)
        let writer: ContentWriter
        do {
            writer = try await store.openWriter(namespace, ref: ref, lease: lease, total: result.compressedSize,
                                                expected: result.compressedDigest)
        } catch where error.code == .alreadyExists {
            try await labelExisting(namespace, descriptor.digest, allLabels)
            return descriptor
        }
        do {
            try await writer.truncate()
            let chunk = 1 << 20
            var offset: Int64 = 0
            while offset < result.compressedSize {
                let (start, length) = (offset, Int(min(Int64(chunk), result.compressedSize - offset)))
                let bytes = try await runBlocking { () throws(BerthError) in
                    try FileSystem.readRange(output, offset: start, length: length)
                }
                try await writer.write(bytes)
                offset += Int64(bytes.count)
            }
            try await writer.commit(size: result.compressedSize, expected: result.compressedDigest, labels: allLabels)
        } catch where error.code == .alreadyExists {
            writer.close()
            try await labelExisting(namespace, descriptor.digest, allLabels)
        } catch {
            writer.close()
            try? await store.abortIngest(namespace, ref: ref)
            throw error
        }
        return descriptor
    }

    /// `mount` made read-only. An overlay with an upper directory becomes one whose topmost
    /// lower is that upper, without `upperdir` and `workdir` (containerd's readonlyOverlay):
    /// a second overlay on the live upper and work directories of a running container's
    /// snapshot would be undefined behaviour for overlayfs.
    static func readOnlyMount(_ mount: Mount) -> Mount {
        var mount = mount
        if mount.type == "overlay", let upper = mount.option("upperdir") {
            let lowers = mount.option("lowerdir")
            mount.options.removeAll { $0.hasPrefix("upperdir=") || $0.hasPrefix("workdir=") || $0.hasPrefix("lowerdir=") }
            mount.options.append("lowerdir=" + ([upper] + (lowers.map { [$0] } ?? [])).joined(separator: ":"))
        }
        mount.options.removeAll { $0 == "rw" }
        if !mount.options.contains("ro") { mount.options.append("ro") }
        return mount
    }

    /// Gives a blob the namespace already had the diff's labels, as containerd updates them.
    func labelExisting(_ namespace: Namespace, _ digest: Digest, _ labels: [String: String]) async throws(BerthError) {
        _ = try await store.updateContent(namespace, digest: digest, labels: labels, paths: labels.keys.map { "labels.\($0)" })
    }

    /// Runs `body` with a directory that shows `mounts` read-only: the source of a single bind
    /// mount as it is, else a temporary read-only mount; nil for no mounts.
    static func withReadOnlyTree<T>(_ mounts: [Mount], scratch: String,
                                    _ body: (String?) throws(BerthError) -> T) throws(BerthError) -> T {
        if mounts.isEmpty { return try body(nil) }
        if mounts.count == 1, let mount = mounts.first, mount.type == "bind" {
            return try body(mount.source)
        }
        let readOnly = mounts.map(readOnlyMount)
        return try Mounter.withTemporaryMount(readOnly, under: scratch) { (root: String) throws(BerthError) -> T in try body(root) }
    }
}
