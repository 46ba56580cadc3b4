/// How a layer's tar stream is compressed.
public enum LayerCompression: Sendable, Equatable {
    case uncompressed, gzip, zstd

    /// The compression an OCI or Docker layer media type names: `application/vnd.oci.image.layer.v1.tar`
    /// with `+gzip` or `+zstd` (and the `.nondistributable.` variants),
    /// `application/vnd.docker.image.rootfs.diff.tar.gzip`,
    /// `application/vnd.docker.image.rootfs.foreign.diff.tar.gzip` and
    /// `application/vnd.docker.image.rootfs.diff.tar`. Nil if `mediaType` is not a layer type.
    public init?(mediaType: String) {
        switch mediaType {
        case "application/vnd.oci.image.layer.v1.tar",
             "application/vnd.oci.image.layer.nondistributable.v1.tar",
             "application/vnd.docker.image.rootfs.diff.tar":
            self = .uncompressed
        case "application/vnd.oci.image.layer.v1.tar+gzip",
             "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
             "application/vnd.docker.image.rootfs.diff.tar.gzip",
             "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip":
            self = .gzip
        case "application/vnd.oci.image.layer.v1.tar+zstd",
             "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd":
            self = .zstd
        default:
            return nil
        }
    }

    /// The compression that the first bytes of a stream show: gzip (`1f 8b`), zstd (`28 b5 2f fd`), else
    /// uncompressed. Four bytes are enough; fewer can still identify gzip.
    public static func detect(_ prefix: some Collection<UInt8>) -> LayerCompression {
        let bytes = Array(prefix.prefix(4))
        if bytes.count >= 2 && bytes[0] == 0x1F && bytes[1] == 0x8B { return .gzip }
        if bytes == [0x28, 0xB5, 0x2F, 0xFD] { return .zstd }
        return .uncompressed
    }
}
