import BerthAPI
import BerthCore
import BerthMetadata
import GRPCCore
import Logging
import SwiftProtobuf

/// `containerd.services.containers.v1.Containers`: container metadata only; tasks run elsewhere.
public struct ContainersService: Containerd_Services_Containers_V1_Containers.SimpleServiceProtocol {
    let store: MetadataStore
    let events: EventBus
    let logger: Logger

    public init(store: MetadataStore, events: EventBus, logger: Logger) {
        self.store = store
        self.events = events
        self.logger = logger
    }

    public func get(request: Containerd_Services_Containers_V1_GetContainerRequest, context: ServerContext) async throws -> Containerd_Services_Containers_V1_GetContainerResponse {
        try await handle(logger, "Containers/Get") {
            let container = try await store.container(try RequestContext.currentNamespace(), id: request.id)
            var response = Containerd_Services_Containers_V1_GetContainerResponse()
            response.container = .init(container)
            return response
        }
    }

    public func list(request: Containerd_Services_Containers_V1_ListContainersRequest, context: ServerContext) async throws -> Containerd_Services_Containers_V1_ListContainersResponse {
        try await handle(logger, "Containers/List") {
            let containers = try await store.containers(try RequestContext.currentNamespace(), filter: try Filter(parsing: request.filters))
            var response = Containerd_Services_Containers_V1_ListContainersResponse()
            response.containers = containers.map(APIContainer.init)
            return response
        }
    }

    public func listStream(request: Containerd_Services_Containers_V1_ListContainersRequest, response: RPCWriter<Containerd_Services_Containers_V1_ListContainerMessage>, context: ServerContext) async throws {
        try await handle(logger, "Containers/ListStream") {
            let containers = try await store.containers(try RequestContext.currentNamespace(), filter: try Filter(parsing: request.filters))
            for container in containers {
                var message = Containerd_Services_Containers_V1_ListContainerMessage()
                message.container = .init(container)
                try await response.write(message)
            }
        }
    }

    public func create(request: Containerd_Services_Containers_V1_CreateContainerRequest, context: ServerContext) async throws -> Containerd_Services_Containers_V1_CreateContainerResponse {
        try await handle(logger, "Containers/Create") {
            let namespace = try RequestContext.currentNamespace()
            let container = try await store.createContainer(namespace, Container(request.container))
            var event = Containerd_Events_ContainerCreate()
            event.id = container.id
            event.image = container.image
            event.runtime.name = container.runtimeName
            if let options = container.runtimeOptions { event.runtime.options = .init(options) }
            events.publish(namespace: namespace.name, topic: Topic.containerCreate, event: event)
            var response = Containerd_Services_Containers_V1_CreateContainerResponse()
            response.container = .init(container)
            return response
        }
    }

    public func update(request: Containerd_Services_Containers_V1_UpdateContainerRequest, context: ServerContext) async throws -> Containerd_Services_Containers_V1_UpdateContainerResponse {
        try await handle(logger, "Containers/Update") {
            let namespace = try RequestContext.currentNamespace()
            guard !request.container.id.isEmpty else { throw BerthError.invalidArgument("Container.ID required") }
            let container = try await store.updateContainer(namespace, Container(request.container), paths: request.updateMask.paths)
            var event = Containerd_Events_ContainerUpdate()
            event.id = container.id
            event.image = container.image
            event.labels = container.labels
            event.snapshotKey = container.snapshotKey
            events.publish(namespace: namespace.name, topic: Topic.containerUpdate, event: event)
            var response = Containerd_Services_Containers_V1_UpdateContainerResponse()
            response.container = .init(container)
            return response
        }
    }

    public func delete(request: Containerd_Services_Containers_V1_DeleteContainerRequest, context: ServerContext) async throws -> Google_Protobuf_Empty {
        try await handle(logger, "Containers/Delete") {
            let namespace = try RequestContext.currentNamespace()
            try await store.deleteContainer(namespace, id: request.id)
            var event = Containerd_Events_ContainerDelete()
            event.id = request.id
            events.publish(namespace: namespace.name, topic: Topic.containerDelete, event: event)
            return Google_Protobuf_Empty()
        }
    }
}
