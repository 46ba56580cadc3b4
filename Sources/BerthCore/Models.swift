/// A protobuf `Any` carried opaquely: the type URL and the encoded bytes, as clients sent them.
/// Specs and runtime options travel this way; Berth stores them byte for byte.
public struct TypedValue: Hashable, Sendable, Codable {
    public var typeURL: String
    public var value: [UInt8]

    public init(typeURL: String, value: [UInt8]) {
        self.typeURL = typeURL
        self.value = value
    }
}

/// A namespace and its labels.
public struct NamespaceInfo: Hashable, Sendable {
    public var name: String
    public var labels: [String: String]

    public init(name: String, labels: [String: String] = [:]) {
        self.name = name
        self.labels = labels
    }
}

/// A named reference to a root descriptor (index or manifest), as `Images` stores it.
public struct Image: Hashable, Sendable, Filterable {
    public var name: String
    public var labels: [String: String]
    public var target: Descriptor
    public var createdAt: Timestamp
    public var updatedAt: Timestamp

    public init(name: String, labels: [String: String] = [:], target: Descriptor,
                createdAt: Timestamp = .now, updatedAt: Timestamp = .now) {
        self.name = name
        self.labels = labels
        self.target = target
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }

    public func field(_ path: [String]) -> String? {
        guard let first = path.first else { return nil }
        // As containerd's adaptor: an empty value counts as absent.
        switch first {
        case "name": return name.nilIfEmpty
        case "target":
            guard path.count == 2 else { return nil }
            switch path[1] {
            case "digest": return target.digest.description
            case "mediatype": return target.mediaType.nilIfEmpty
            default: return nil
            }
        case "labels": return Self.label(path.dropFirst(), in: labels)
        case "annotations": return Self.label(path.dropFirst(), in: target.annotations)
        default: return nil
        }
    }
}

/// What a namespace knows of a blob: the blob plus that namespace's labels for it.
public struct ContentInfo: Hashable, Sendable, Filterable {
    public var digest: Digest
    public var size: Int64
    public var createdAt: Timestamp
    public var updatedAt: Timestamp
    public var labels: [String: String]

    public init(digest: Digest, size: Int64, createdAt: Timestamp, updatedAt: Timestamp, labels: [String: String]) {
        self.digest = digest
        self.size = size
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.labels = labels
    }

    public func field(_ path: [String]) -> String? {
        guard let first = path.first else { return nil }
        switch first {
        case "digest": return digest.description
        case "size": return String(size)
        case "labels": return Self.label(path.dropFirst(), in: labels)
        default: return nil
        }
    }
}

/// A lease: holds the resources attached to it back from garbage collection until it is deleted
/// or expires (`containerd.io/gc.expire`).
public struct Lease: Hashable, Sendable, Filterable {
    public var id: String
    public var labels: [String: String]
    public var createdAt: Timestamp

    public init(id: String, labels: [String: String] = [:], createdAt: Timestamp = .now) {
        self.id = id
        self.labels = labels
        self.createdAt = createdAt
    }

    public func field(_ path: [String]) -> String? {
        guard let first = path.first else { return nil }
        switch first {
        case "id": return id
        case "labels": return Self.label(path.dropFirst(), in: labels)
        default: return nil
        }
    }
}

/// A resource a lease holds: `content` (id is a digest), `ingests` (id is a ref) or
/// `snapshots/<snapshotter>` (id is a key).
public struct LeaseResource: Hashable, Sendable {
    public var id: String
    public var type: String

    public init(id: String, type: String) {
        self.id = id
        self.type = type
    }
}

/// A container's metadata: what to run and with what, not the running process.
public struct Container: Hashable, Sendable, Filterable {
    public var id: String
    public var labels: [String: String]
    public var image: String
    public var runtimeName: String
    public var runtimeOptions: TypedValue?
    public var spec: TypedValue?
    public var snapshotter: String
    public var snapshotKey: String
    public var createdAt: Timestamp
    public var updatedAt: Timestamp
    public var extensions: [String: TypedValue]
    public var sandbox: String

    public init(id: String, labels: [String: String] = [:], image: String = "", runtimeName: String,
                runtimeOptions: TypedValue? = nil, spec: TypedValue?, snapshotter: String = "",
                snapshotKey: String = "", createdAt: Timestamp = .now, updatedAt: Timestamp = .now,
                extensions: [String: TypedValue] = [:], sandbox: String = "") {
        self.id = id
        self.labels = labels
        self.image = image
        self.runtimeName = runtimeName
        self.runtimeOptions = runtimeOptions
        self.spec = spec
        self.snapshotter = snapshotter
        self.snapshotKey = snapshotKey
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.extensions = extensions
        self.sandbox = sandbox
    }

    public func field(_ path: [String]) -> String? {
        guard let first = path.first else { return nil }
        // containerd's fields (an empty value counts as absent), plus snapshotter, snapshotkey
        // and sandbox, which containerd does not offer.
        switch first {
        case "id": return id.nilIfEmpty
        case "image": return image.nilIfEmpty
        case "snapshotter": return snapshotter.nilIfEmpty
        case "snapshotkey": return snapshotKey.nilIfEmpty
        case "sandbox": return sandbox.nilIfEmpty
        case "runtime":
            guard path.count == 2 else { return nil }
            return path[1] == "name" ? runtimeName.nilIfEmpty : nil
        case "labels": return Self.label(path.dropFirst(), in: labels)
        default: return nil
        }
    }
}

extension String {
    var nilIfEmpty: String? { isEmpty ? nil : self }
}
