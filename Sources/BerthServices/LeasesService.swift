import BerthAPI
import BerthCore
import BerthMetadata
import GRPCCore
import Logging
import SwiftProtobuf

/// `containerd.services.leases.v1.Leases`.
public struct LeasesService: Containerd_Services_Leases_V1_Leases.SimpleServiceProtocol {
    let store: MetadataStore
    let gc: GarbageCollector
    let logger: Logger

    public init(store: MetadataStore, gc: GarbageCollector, logger: Logger) {
        self.store = store
        self.gc = gc
        self.logger = logger
    }

    public func create(request: Containerd_Services_Leases_V1_CreateRequest, context: ServerContext) async throws -> Containerd_Services_Leases_V1_CreateResponse {
        try await handle(logger, "Leases/Create") {
            let lease = try await store.createLease(try RequestContext.currentNamespace(), id: request.id, labels: request.labels)
            var response = Containerd_Services_Leases_V1_CreateResponse()
            response.lease = .init(lease)
            return response
        }
    }

    public func delete(request: Containerd_Services_Leases_V1_DeleteRequest, context: ServerContext) async throws -> Google_Protobuf_Empty {
        try await handle(logger, "Leases/Delete") {
            try await store.deleteLease(try RequestContext.currentNamespace(), id: request.id)
            // The deletion stands whatever collection does; a failed collection is logged and retried later.
            if request.sync {
                do { try await gc.collect() } catch {
                    logger.error("garbage collection after delete failed", metadata: ["error": "\(error)"])
                }
            }
            return Google_Protobuf_Empty()
        }
    }

    public func list(request: Containerd_Services_Leases_V1_ListRequest, context: ServerContext) async throws -> Containerd_Services_Leases_V1_ListResponse {
        try await handle(logger, "Leases/List") {
            let leases = try await store.leases(try RequestContext.currentNamespace(), filter: try Filter(parsing: request.filters))
            var response = Containerd_Services_Leases_V1_ListResponse()
            response.leases = leases.map(APILease.init)
            return response
        }
    }

    public func addResource(request: Containerd_Services_Leases_V1_AddResourceRequest, context: ServerContext) async throws -> Google_Protobuf_Empty {
        try await handle(logger, "Leases/AddResource") {
            try await store.addLeaseResource(try RequestContext.currentNamespace(), lease: request.id,
                                             LeaseResource(id: request.resource.id, type: request.resource.type))
            return Google_Protobuf_Empty()
        }
    }

    public func deleteResource(request: Containerd_Services_Leases_V1_DeleteResourceRequest, context: ServerContext) async throws -> Google_Protobuf_Empty {
        try await handle(logger, "Leases/DeleteResource") {
            try await store.deleteLeaseResource(try RequestContext.currentNamespace(), lease: request.id,
                                                LeaseResource(id: request.resource.id, type: request.resource.type))
            return Google_Protobuf_Empty()
        }
    }

    public func listResources(request: Containerd_Services_Leases_V1_ListResourcesRequest, context: ServerContext) async throws -> Containerd_Services_Leases_V1_ListResourcesResponse {
        try await handle(logger, "Leases/ListResources") {
            let resources = try await store.leaseResources(try RequestContext.currentNamespace(), lease: request.id)
            var response = Containerd_Services_Leases_V1_ListResourcesResponse()
            response.resources = resources.map { resource in
                var r = Containerd_Services_Leases_V1_Resource()
                r.id = resource.id
                r.type = resource.type
                return r
            }
            return response
        }
    }
}
