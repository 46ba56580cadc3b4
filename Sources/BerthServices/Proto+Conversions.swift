import BerthAPI
import BerthCore
import SwiftProtobuf

// Conversions between protobuf messages and Berth's own types. Only this module sees both.

extension Google_Protobuf_Timestamp {
    init(_ time: Timestamp) {
        self.init(seconds: time.seconds, nanos: time.nanos)
    }
}

extension Timestamp {
    init(_ proto: Google_Protobuf_Timestamp) {
        self.init(seconds: proto.seconds, nanos: proto.nanos)
    }
}

extension Google_Protobuf_Any {
    init(_ value: TypedValue) {
        self.init()
        typeURL = value.typeURL
        self.value = .init(value.value)
    }

    /// Wraps a message the way containerd's typeurl does: the type URL is the bare full name.
    init(event: some SwiftProtobuf.Message) throws {
        self.init()
        typeURL = type(of: event).protoMessageName
        value = try event.serializedBytes()
    }
}

extension TypedValue {
    init(_ any: Google_Protobuf_Any) {
        self.init(typeURL: any.typeURL, value: Array(any.value))
    }
}

func parseDigest(_ text: String, field: String) throws(BerthError) -> Digest {
    guard !text.isEmpty else { throw .invalidArgument("\(field) must be set") }
    do { return try Digest(parsing: text) } catch {
        throw .invalidArgument("\(field): \(error.message)")
    }
}

extension APIDescriptor {
    init(_ descriptor: Descriptor) {
        self.init()
        mediaType = descriptor.mediaType
        digest = descriptor.digest.description
        size = descriptor.size
        annotations = descriptor.annotations
    }
}

extension Descriptor {
    init(_ proto: APIDescriptor, field: String) throws(BerthError) {
        self.init(mediaType: proto.mediaType, digest: try parseDigest(proto.digest, field: "\(field).digest"),
                  size: proto.size, annotations: proto.annotations)
    }
}

extension APIImage {
    init(_ image: Image) {
        self.init()
        name = image.name
        labels = image.labels
        target = APIDescriptor(image.target)
        createdAt = .init(image.createdAt)
        updatedAt = .init(image.updatedAt)
    }
}

extension Image {
    init(_ proto: APIImage) throws(BerthError) {
        self.init(name: proto.name, labels: proto.labels, target: try Descriptor(proto.target, field: "image.target"))
    }
}

extension APIContentInfo {
    init(_ info: ContentInfo) {
        self.init()
        digest = info.digest.description
        size = info.size
        createdAt = .init(info.createdAt)
        updatedAt = .init(info.updatedAt)
        labels = info.labels
    }
}

extension APILease {
    init(_ lease: Lease) {
        self.init()
        id = lease.id
        labels = lease.labels
        createdAt = .init(lease.createdAt)
    }
}

extension APIContainer {
    init(_ c: Container) {
        self.init()
        id = c.id
        labels = c.labels
        image = c.image
        runtime.name = c.runtimeName
        if let options = c.runtimeOptions { runtime.options = .init(options) }
        if let spec = c.spec { self.spec = .init(spec) }
        snapshotter = c.snapshotter
        snapshotKey = c.snapshotKey
        createdAt = .init(c.createdAt)
        updatedAt = .init(c.updatedAt)
        extensions = c.extensions.mapValues(Google_Protobuf_Any.init)
        sandbox = c.sandbox
    }
}

extension Container {
    init(_ proto: APIContainer) {
        self.init(
            id: proto.id, labels: proto.labels, image: proto.image, runtimeName: proto.runtime.name,
            runtimeOptions: proto.runtime.hasOptions ? TypedValue(proto.runtime.options) : nil,
            spec: proto.hasSpec ? TypedValue(proto.spec) : nil, snapshotter: proto.snapshotter,
            snapshotKey: proto.snapshotKey, extensions: proto.extensions.mapValues(TypedValue.init),
            sandbox: proto.sandbox)
    }
}
