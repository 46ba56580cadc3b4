import BerthServices

/// The components berthd runs, under containerd's plugin types, for `ctr plugins ls`.
/// Ids match containerd's where the component does the same job.
enum Plugins {
    static let table: [PluginEntry] = [
        PluginEntry(type: "io.containerd.content.v1", id: "content"),
        PluginEntry(type: "io.containerd.metadata.v1", id: "sqlite", requires: ["io.containerd.content.v1"]),
        PluginEntry(type: "io.containerd.gc.v1", id: "scheduler", requires: ["io.containerd.metadata.v1"]),
        PluginEntry(type: "io.containerd.event.v1", id: "exchange"),
        PluginEntry(type: "io.containerd.snapshotter.v1", id: "native"),
        PluginEntry(type: "io.containerd.snapshotter.v1", id: "overlayfs"),
        PluginEntry(type: "io.containerd.differ.v1", id: "walking", requires: ["io.containerd.metadata.v1"]),
        PluginEntry(type: "io.containerd.runtime.v2", id: "task", requires: ["io.containerd.event.v1", "io.containerd.metadata.v1"]),
        PluginEntry(type: "io.containerd.lease.v1", id: "manager", requires: ["io.containerd.metadata.v1"]),
        PluginEntry(type: "io.containerd.service.v1", id: "containers-service", requires: ["io.containerd.metadata.v1"]),
        PluginEntry(type: "io.containerd.service.v1", id: "content-service", requires: ["io.containerd.metadata.v1"]),
        PluginEntry(type: "io.containerd.service.v1", id: "images-service", requires: ["io.containerd.metadata.v1", "io.containerd.gc.v1"]),
        PluginEntry(type: "io.containerd.service.v1", id: "leases-service", requires: ["io.containerd.metadata.v1", "io.containerd.gc.v1"]),
        PluginEntry(type: "io.containerd.service.v1", id: "namespaces-service", requires: ["io.containerd.metadata.v1"]),
        PluginEntry(type: "io.containerd.service.v1", id: "snapshots-service", requires: ["io.containerd.snapshotter.v1"]),
        PluginEntry(type: "io.containerd.service.v1", id: "diff-service", requires: ["io.containerd.differ.v1"]),
        PluginEntry(type: "io.containerd.service.v1", id: "tasks-service", requires: ["io.containerd.runtime.v2", "io.containerd.metadata.v1"]),
        PluginEntry(type: "io.containerd.grpc.v1", id: "containers", requires: ["io.containerd.service.v1"]),
        PluginEntry(type: "io.containerd.grpc.v1", id: "content", requires: ["io.containerd.service.v1"]),
        PluginEntry(type: "io.containerd.grpc.v1", id: "diff", requires: ["io.containerd.service.v1"]),
        PluginEntry(type: "io.containerd.grpc.v1", id: "events", requires: ["io.containerd.event.v1"]),
        PluginEntry(type: "io.containerd.grpc.v1", id: "images", requires: ["io.containerd.service.v1"]),
        PluginEntry(type: "io.containerd.grpc.v1", id: "introspection"),
        PluginEntry(type: "io.containerd.grpc.v1", id: "leases", requires: ["io.containerd.service.v1"]),
        PluginEntry(type: "io.containerd.grpc.v1", id: "namespaces", requires: ["io.containerd.service.v1"]),
        PluginEntry(type: "io.containerd.grpc.v1", id: "snapshots", requires: ["io.containerd.service.v1"]),
        PluginEntry(type: "io.containerd.grpc.v1", id: "tasks", requires: ["io.containerd.service.v1"]),
        PluginEntry(type: "io.containerd.grpc.v1", id: "version"),
    ]
}
