import BerthAPI
import BerthCore
import BerthMetadata
import GRPCCore
import Logging
import SwiftProtobuf

/// `containerd.services.namespaces.v1.Namespaces`.
public struct NamespacesService: Containerd_Services_Namespaces_V1_Namespaces.SimpleServiceProtocol {
    let store: MetadataStore
    let events: EventBus
    let logger: Logger

    public init(store: MetadataStore, events: EventBus, logger: Logger) {
        self.store = store
        self.events = events
        self.logger = logger
    }

    public func get(request: Containerd_Services_Namespaces_V1_GetNamespaceRequest, context: ServerContext) async throws -> Containerd_Services_Namespaces_V1_GetNamespaceResponse {
        try await handle(logger, "Namespaces/Get") {
            let info = try await store.namespace(try Namespace(request.name))
            var response = Containerd_Services_Namespaces_V1_GetNamespaceResponse()
            response.namespace = .init(info)
            return response
        }
    }

    public func list(request: Containerd_Services_Namespaces_V1_ListNamespacesRequest, context: ServerContext) async throws -> Containerd_Services_Namespaces_V1_ListNamespacesResponse {
        try await handle(logger, "Namespaces/List") {
            var response = Containerd_Services_Namespaces_V1_ListNamespacesResponse()
            response.namespaces = try await store.namespaces().map(APINamespace.init)
            return response
        }
    }

    public func create(request: Containerd_Services_Namespaces_V1_CreateNamespaceRequest, context: ServerContext) async throws -> Containerd_Services_Namespaces_V1_CreateNamespaceResponse {
        try await handle(logger, "Namespaces/Create") {
            let info = try await store.createNamespace(try Namespace(request.namespace.name), labels: request.namespace.labels)
            var event = Containerd_Events_NamespaceCreate()
            event.name = info.name
            event.labels = info.labels
            events.publish(namespace: info.name, topic: Topic.namespaceCreate, event: event)
            var response = Containerd_Services_Namespaces_V1_CreateNamespaceResponse()
            response.namespace = .init(info)
            return response
        }
    }

    public func update(request: Containerd_Services_Namespaces_V1_UpdateNamespaceRequest, context: ServerContext) async throws -> Containerd_Services_Namespaces_V1_UpdateNamespaceResponse {
        try await handle(logger, "Namespaces/Update") {
            let info = try await store.updateNamespace(try Namespace(request.namespace.name), labels: request.namespace.labels,
                                                       paths: request.updateMask.paths)
            var event = Containerd_Events_NamespaceUpdate()
            event.name = info.name
            event.labels = info.labels
            events.publish(namespace: info.name, topic: Topic.namespaceUpdate, event: event)
            var response = Containerd_Services_Namespaces_V1_UpdateNamespaceResponse()
            response.namespace = .init(info)
            return response
        }
    }

    public func delete(request: Containerd_Services_Namespaces_V1_DeleteNamespaceRequest, context: ServerContext) async throws -> Google_Protobuf_Empty {
        try await handle(logger, "Namespaces/Delete") {
            let namespace = try Namespace(request.name)
            try await store.deleteNamespace(namespace)
            var event = Containerd_Events_NamespaceDelete()
            event.name = namespace.name
            events.publish(namespace: namespace.name, topic: Topic.namespaceDelete, event: event)
            return Google_Protobuf_Empty()
        }
    }
}

extension APINamespace {
    init(_ info: NamespaceInfo) {
        self.init()
        name = info.name
        labels = info.labels
    }
}
