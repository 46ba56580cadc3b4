import BerthAPI
import BerthCore
import BerthMetadata
import GRPCCore
import Logging
import SwiftProtobuf

/// `containerd.services.images.v1.Images`.
public struct ImagesService: Containerd_Services_Images_V1_Images.SimpleServiceProtocol {
    let store: MetadataStore
    let gc: GarbageCollector
    let events: EventBus
    let logger: Logger

    public init(store: MetadataStore, gc: GarbageCollector, events: EventBus, logger: Logger) {
        self.store = store
        self.gc = gc
        self.events = events
        self.logger = logger
    }

    public func get(request: Containerd_Services_Images_V1_GetImageRequest, context: ServerContext) async throws -> Containerd_Services_Images_V1_GetImageResponse {
        try await handle(logger, "Images/Get") {
            let image = try await store.image(try RequestContext.currentNamespace(), name: request.name)
            var response = Containerd_Services_Images_V1_GetImageResponse()
            response.image = .init(image)
            return response
        }
    }

    public func list(request: Containerd_Services_Images_V1_ListImagesRequest, context: ServerContext) async throws -> Containerd_Services_Images_V1_ListImagesResponse {
        try await handle(logger, "Images/List") {
            let images = try await store.images(try RequestContext.currentNamespace(), filter: try Filter(parsing: request.filters))
            var response = Containerd_Services_Images_V1_ListImagesResponse()
            response.images = images.map(APIImage.init)
            return response
        }
    }

    public func create(request: Containerd_Services_Images_V1_CreateImageRequest, context: ServerContext) async throws -> Containerd_Services_Images_V1_CreateImageResponse {
        try await handle(logger, "Images/Create") {
            let namespace = try RequestContext.currentNamespace()
            guard !request.image.name.isEmpty else { throw BerthError.invalidArgument("Image.Name required") }
            let image = try await store.createImage(namespace, try Image(request.image))
            var event = Containerd_Services_Images_V1_ImageCreate()
            event.name = image.name
            event.labels = image.labels
            events.publish(namespace: namespace.name, topic: Topic.imageCreate, event: event)
            var response = Containerd_Services_Images_V1_CreateImageResponse()
            response.image = .init(image)
            return response
        }
    }

    public func update(request: Containerd_Services_Images_V1_UpdateImageRequest, context: ServerContext) async throws -> Containerd_Services_Images_V1_UpdateImageResponse {
        try await handle(logger, "Images/Update") {
            let namespace = try RequestContext.currentNamespace()
            guard !request.image.name.isEmpty else { throw BerthError.invalidArgument("Image.Name required") }
            let paths = request.updateMask.paths
            // A mask that leaves the target alone may come with an empty one; the stored target
            // then stands in (only the paths named are applied).
            let target: Descriptor
            if paths.isEmpty || paths.contains("target") {
                target = try Descriptor(request.image.target, field: "image.target")
            } else if let sent = try? Descriptor(request.image.target, field: "image.target") {
                target = sent
            } else {
                var stored = try await store.image(namespace, name: request.image.name).target
                stored.annotations = request.image.target.annotations  // for `annotations.<key>` paths
                target = stored
            }
            let image = try await store.updateImage(namespace, Image(name: request.image.name, labels: request.image.labels, target: target),
                                                    paths: paths)
            var event = Containerd_Services_Images_V1_ImageUpdate()
            event.name = image.name
            event.labels = image.labels
            events.publish(namespace: namespace.name, topic: Topic.imageUpdate, event: event)
            var response = Containerd_Services_Images_V1_UpdateImageResponse()
            response.image = .init(image)
            return response
        }
    }

    public func delete(request: Containerd_Services_Images_V1_DeleteImageRequest, context: ServerContext) async throws -> Google_Protobuf_Empty {
        try await handle(logger, "Images/Delete") {
            let namespace = try RequestContext.currentNamespace()
            try await store.deleteImage(namespace, name: request.name)
            var event = Containerd_Services_Images_V1_ImageDelete()
            event.name = request.name
            events.publish(namespace: namespace.name, topic: Topic.imageDelete, event: event)
            // The deletion stands whatever collection does; a failed collection is logged and retried later.
            if request.sync {
                do { try await gc.collect() } catch {
                    logger.error("garbage collection after delete failed", metadata: ["error": "\(error)"])
                }
            }
            return Google_Protobuf_Empty()
        }
    }
}
