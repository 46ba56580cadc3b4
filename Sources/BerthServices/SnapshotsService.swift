import BerthAPI
import BerthCore
import BerthMetadata
import GRPCCore
import Logging
import SwiftProtobuf

/// `containerd.services.snapshots.v1.Snapshots`.
public struct SnapshotsService: Containerd_Services_Snapshots_V1_Snapshots.SimpleServiceProtocol {
    let store: MetadataStore
    let events: EventBus
    let logger: Logger

    public init(store: MetadataStore, events: EventBus, logger: Logger) {
        self.store = store
        self.events = events
        self.logger = logger
    }

    public func prepare(request: Containerd_Services_Snapshots_V1_PrepareSnapshotRequest, context: ServerContext) async throws -> Containerd_Services_Snapshots_V1_PrepareSnapshotResponse {
        try await handle(logger, "Snapshots/Prepare") {
            var response = Containerd_Services_Snapshots_V1_PrepareSnapshotResponse()
            response.mounts = try await create(.active, snapshotter: request.snapshotter, key: request.key,
                                               parent: request.parent, labels: request.labels)
            return response
        }
    }

    public func view(request: Containerd_Services_Snapshots_V1_ViewSnapshotRequest, context: ServerContext) async throws -> Containerd_Services_Snapshots_V1_ViewSnapshotResponse {
        try await handle(logger, "Snapshots/View") {
            var response = Containerd_Services_Snapshots_V1_ViewSnapshotResponse()
            response.mounts = try await create(.view, snapshotter: request.snapshotter, key: request.key,
                                               parent: request.parent, labels: request.labels)
            return response
        }
    }

    func create(_ kind: SnapshotKind, snapshotter: String, key: String, parent: String, labels: [String: String]) async throws(BerthError) -> [APIMount] {
        let namespace = try RequestContext.currentNamespace()
        let mounts = try await store.prepareSnapshot(namespace, snapshotter: snapshotter, key: key, parent: parent,
                                                     kind: kind, labels: labels, lease: RequestContext.lease)
        var event = Containerd_Events_SnapshotPrepare()
        event.key = key
        event.parent = parent
        event.snapshotter = snapshotter
        events.publish(namespace: namespace.name, topic: Topic.snapshotPrepare, event: event)
        return mounts.map(APIMount.init)
    }

    public func mounts(request: Containerd_Services_Snapshots_V1_MountsRequest, context: ServerContext) async throws -> Containerd_Services_Snapshots_V1_MountsResponse {
        try await handle(logger, "Snapshots/Mounts") {
            var response = Containerd_Services_Snapshots_V1_MountsResponse()
            response.mounts = try await store.snapshotMounts(try RequestContext.currentNamespace(), snapshotter: request.snapshotter,
                                                             key: request.key).map(APIMount.init)
            return response
        }
    }

    public func commit(request: Containerd_Services_Snapshots_V1_CommitSnapshotRequest, context: ServerContext) async throws -> Google_Protobuf_Empty {
        try await handle(logger, "Snapshots/Commit") {
            let namespace = try RequestContext.currentNamespace()
            try await store.commitSnapshot(namespace, snapshotter: request.snapshotter, name: request.name, key: request.key,
                                           labels: request.labels, lease: RequestContext.lease)
            var event = Containerd_Events_SnapshotCommit()
            event.key = request.key
            event.name = request.name
            event.snapshotter = request.snapshotter
            events.publish(namespace: namespace.name, topic: Topic.snapshotCommit, event: event)
            return Google_Protobuf_Empty()
        }
    }

    public func remove(request: Containerd_Services_Snapshots_V1_RemoveSnapshotRequest, context: ServerContext) async throws -> Google_Protobuf_Empty {
        try await handle(logger, "Snapshots/Remove") {
            let namespace = try RequestContext.currentNamespace()
            try await store.removeSnapshot(namespace, snapshotter: request.snapshotter, key: request.key)
            var event = Containerd_Events_SnapshotRemove()
            event.key = request.key
            event.snapshotter = request.snapshotter
            events.publish(namespace: namespace.name, topic: Topic.snapshotRemove, event: event)
            return Google_Protobuf_Empty()
        }
    }

    public func stat(request: Containerd_Services_Snapshots_V1_StatSnapshotRequest, context: ServerContext) async throws -> Containerd_Services_Snapshots_V1_StatSnapshotResponse {
        try await handle(logger, "Snapshots/Stat") {
            var response = Containerd_Services_Snapshots_V1_StatSnapshotResponse()
            response.info = .init(try await store.snapshotInfo(try RequestContext.currentNamespace(), snapshotter: request.snapshotter,
                                                               key: request.key))
            return response
        }
    }

    public func update(request: Containerd_Services_Snapshots_V1_UpdateSnapshotRequest, context: ServerContext) async throws -> Containerd_Services_Snapshots_V1_UpdateSnapshotResponse {
        try await handle(logger, "Snapshots/Update") {
            var response = Containerd_Services_Snapshots_V1_UpdateSnapshotResponse()
            response.info = .init(try await store.updateSnapshot(try RequestContext.currentNamespace(), snapshotter: request.snapshotter,
                                                                 key: request.info.name, labels: request.info.labels,
                                                                 paths: request.updateMask.paths))
            return response
        }
    }

    /// Streams the snapshots in batches of 100, as containerd does.
    public func list(request: Containerd_Services_Snapshots_V1_ListSnapshotsRequest, response: RPCWriter<Containerd_Services_Snapshots_V1_ListSnapshotsResponse>, context: ServerContext) async throws {
        try await handle(logger, "Snapshots/List") {
            let infos = try await store.snapshots(try RequestContext.currentNamespace(), snapshotter: request.snapshotter,
                                                  filter: try Filter(parsing: request.filters))
            var start = 0
            while start < infos.count {
                var message = Containerd_Services_Snapshots_V1_ListSnapshotsResponse()
                message.info = infos[start..<min(start + 100, infos.count)].map(Containerd_Services_Snapshots_V1_Info.init)
                try await response.write(message)
                start += 100
            }
        }
    }

    public func usage(request: Containerd_Services_Snapshots_V1_UsageRequest, context: ServerContext) async throws -> Containerd_Services_Snapshots_V1_UsageResponse {
        try await handle(logger, "Snapshots/Usage") {
            let usage = try await store.snapshotUsage(try RequestContext.currentNamespace(), snapshotter: request.snapshotter,
                                                      key: request.key)
            var response = Containerd_Services_Snapshots_V1_UsageResponse()
            response.size = usage.size
            response.inodes = usage.inodes
            return response
        }
    }

    public func cleanup(request: Containerd_Services_Snapshots_V1_CleanupRequest, context: ServerContext) async throws -> Google_Protobuf_Empty {
        try await handle(logger, "Snapshots/Cleanup") {
            try await store.cleanupSnapshots(snapshotter: request.snapshotter)
            return Google_Protobuf_Empty()
        }
    }
}

extension APIMount {
    init(_ mount: Mount) {
        self.init()
        type = mount.type
        source = mount.source
        target = mount.target
        options = mount.options
    }
}

extension Mount {
    init(_ proto: APIMount) {
        self.init(type: proto.type, source: proto.source, target: proto.target, options: proto.options)
    }
}

extension Containerd_Services_Snapshots_V1_Info {
    init(_ info: SnapshotInfo) {
        self.init()
        name = info.name
        parent = info.parent
        kind = switch info.kind {
        case .view: .view
        case .active: .active
        case .committed: .committed
        }
        createdAt = .init(info.createdAt)
        updatedAt = .init(info.updatedAt)
        labels = info.labels
    }
}
