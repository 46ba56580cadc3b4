import BerthAPI
import BerthContent
import BerthCore
import BerthMetadata
import BerthSystem
import Foundation
import GRPCCore
import Logging
import SwiftProtobuf

/// `containerd.services.content.v1.Content`: blobs as one namespace sees them, and the
/// resumable, verified ingests that create them.
public struct ContentService: Containerd_Services_Content_V1_Content.SimpleServiceProtocol {
    /// containerd reads in 1 MiB pieces; so does Berth.
    static let readChunkSize = 1 << 20
    /// Reads of at most this many bytes run on the calling thread.
    static let inlineReadLimit: Int64 = 64 * 1024

    let store: MetadataStore
    let events: EventBus
    let logger: Logger

    public init(store: MetadataStore, events: EventBus, logger: Logger) {
        self.store = store
        self.events = events
        self.logger = logger
    }

    public func info(request: Containerd_Services_Content_V1_InfoRequest, context: ServerContext) async throws -> Containerd_Services_Content_V1_InfoResponse {
        try await handle(logger, "Content/Info") {
            let namespace = try RequestContext.currentNamespace()
            let info = try await store.contentInfo(namespace, digest: try parseDigest(request.digest, field: "digest"))
            var response = Containerd_Services_Content_V1_InfoResponse()
            response.info = .init(info)
            return response
        }
    }

    public func update(request: Containerd_Services_Content_V1_UpdateRequest, context: ServerContext) async throws -> Containerd_Services_Content_V1_UpdateResponse {
        try await handle(logger, "Content/Update") {
            let namespace = try RequestContext.currentNamespace()
            let digest = try parseDigest(request.info.digest, field: "info.digest")
            let info = try await store.updateContent(namespace, digest: digest, labels: request.info.labels, paths: request.updateMask.paths)
            var response = Containerd_Services_Content_V1_UpdateResponse()
            response.info = .init(info)
            return response
        }
    }

    public func list(request: Containerd_Services_Content_V1_ListContentRequest, response: RPCWriter<Containerd_Services_Content_V1_ListContentResponse>, context: ServerContext) async throws {
        try await handle(logger, "Content/List") {
            let namespace = try RequestContext.currentNamespace()
            let infos = try await store.contents(namespace, filter: try Filter(parsing: request.filters))
            // Batches keep each message well under the 16 MiB limit.
            for start in stride(from: 0, to: infos.count, by: 100) {
                var message = Containerd_Services_Content_V1_ListContentResponse()
                message.info = infos[start..<min(start + 100, infos.count)].map(APIContentInfo.init)
                try await response.write(message)
            }
        }
    }

    public func delete(request: Containerd_Services_Content_V1_DeleteContentRequest, context: ServerContext) async throws -> Google_Protobuf_Empty {
        try await handle(logger, "Content/Delete") {
            let namespace = try RequestContext.currentNamespace()
            let digest = try parseDigest(request.digest, field: "digest")
            try await store.deleteContent(namespace, digest: digest)
            var event = Containerd_Events_ContentDelete()
            event.digest = digest.description
            events.publish(namespace: namespace.name, topic: Topic.contentDelete, event: event)
            return Google_Protobuf_Empty()
        }
    }

    public func read(request: Containerd_Services_Content_V1_ReadContentRequest, response: RPCWriter<Containerd_Services_Content_V1_ReadContentResponse>, context: ServerContext) async throws {
        try await handle(logger, "Content/Read") {
            let namespace = try RequestContext.currentNamespace()
            let digest = try parseDigest(request.digest, field: "digest")
            // As containerd: a negative offset reads from the start.
            let (offset, size) = (max(request.offset, 0), request.size)
            let store = self.store
            // Clients read in small pieces (ctr: 32 KiB per call), so the lookup, the open and the
            // first piece go together. The open file serves the whole call, even if the blob is
            // collected meanwhile, as containerd's reader does.
            let open = { @Sendable () throws(BerthError) -> (reader: BlobReader, end: Int64, bytes: [UInt8]) in
                let total = try store.contentSize(namespace, digest: digest)
                guard offset <= total else {
                    throw BerthError(.outOfRange, "content \(digest): read past object length \(total) bytes")
                }
                let end = size > 0 && size < total - offset ? offset + size : total
                let reader = try store.blobs.openReader(digest)
                let length = Int(min(Int64(Self.readChunkSize), end - offset))
                return (reader, end, length > 0 ? try reader.read(offset: offset, length: length) : [])
            }
            // Manifests and configs (what ctr reads a dozen times per `run`) are read on the
            // calling thread, as metadata reads are: a hop to a blocking thread and back costs
            // more than the read. A blob that may be large, or whose size the client left open,
            // goes to a blocking thread.
            let first = size > 0 && size <= Self.inlineReadLimit ? try open() : try await runBlocking(open)
            let reader = first.reader
            var position = offset
            var chunk = first.bytes
            while position < first.end {
                guard !chunk.isEmpty else { throw BerthError(.dataLoss, "content \(digest): blob shorter than recorded size") }
                var message = Containerd_Services_Content_V1_ReadContentResponse()
                message.offset = position
                message.data = Data(chunk)
                try await response.write(message)
                position += Int64(chunk.count)
                guard position < first.end else { break }
                let (at, length) = (position, Int(min(Int64(Self.readChunkSize), first.end - position)))
                chunk = try await runBlocking { () throws(BerthError) in try reader.read(offset: at, length: length) }
            }
        }
    }

    public func status(request: Containerd_Services_Content_V1_StatusRequest, context: ServerContext) async throws -> Containerd_Services_Content_V1_StatusResponse {
        try await handle(logger, "Content/Status") {
            let namespace = try RequestContext.currentNamespace()
            let status = try await store.ingestStatus(namespace, ref: request.ref)
            var response = Containerd_Services_Content_V1_StatusResponse()
            response.status = .init(status)
            return response
        }
    }

    public func listStatuses(request: Containerd_Services_Content_V1_ListStatusesRequest, context: ServerContext) async throws -> Containerd_Services_Content_V1_ListStatusesResponse {
        try await handle(logger, "Content/ListStatuses") {
            let namespace = try RequestContext.currentNamespace()
            var response = Containerd_Services_Content_V1_ListStatusesResponse()
            response.statuses = try await store.ingestStatuses(namespace, filter: try Filter(parsing: request.filters))
                .map(APIContentStatus.init)
            return response
        }
    }

    public func abort(request: Containerd_Services_Content_V1_AbortRequest, context: ServerContext) async throws -> Google_Protobuf_Empty {
        try await handle(logger, "Content/Abort") {
            let namespace = try RequestContext.currentNamespace()
            try await store.abortIngest(namespace, ref: request.ref)
            return Google_Protobuf_Empty()
        }
    }

    /// One stream of STAT, WRITE and COMMIT requests against one ref, answered one for one.
    public func write(request: RPCAsyncSequence<APIWriteContentRequest, any Error>, response: RPCWriter<APIWriteContentResponse>, context: ServerContext) async throws {
        try await handle(logger, "Content/Write") {
            let namespace = try RequestContext.currentNamespace()
            var requests = request.makeAsyncIterator()
            guard var message = try await requests.next() else { return }
            guard !message.ref.isEmpty else { throw BerthError.invalidArgument("first message must have a reference") }
            var expected = message.expected.isEmpty ? nil : try parseDigest(message.expected, field: "expected")
            let writer = try await store.openWriter(namespace, ref: message.ref, lease: RequestContext.lease,
                                                    total: message.total, expected: expected)
            defer { writer.close() }
            if writer.offset > 0 {
                logger.info("resuming ingest", metadata: ["ref": "\(writer.ref)", "namespace": "\(namespace)", "offset": "\(writer.offset)"])
            }
            var first = true
            while true {
                var reply = APIWriteContentResponse()
                reply.action = message.action
                if !message.expected.isEmpty && !first {
                    expected = try parseDigest(message.expected, field: "expected")
                    try await writer.expect(expected!)
                }
                first = false
                if message.total > 0 { try await writer.setTotal(message.total) }
                reply.offset = writer.offset
                switch message.action {
                case .stat:
                    let status = writer.status
                    reply.digest = writer.digest.description
                    reply.startedAt = .init(status.startedAt)
                    reply.updatedAt = .init(status.updatedAt)
                    reply.total = writer.total
                case .write, .commit:
                    if message.offset > 0 && message.offset != writer.offset {
                        throw BerthError(.outOfRange, "write @\(message.offset) must occur at current offset \(writer.offset)")
                    }
                    if message.offset == 0 && writer.offset > 0 {
                        try await writer.truncate()
                    }
                    if !message.data.isEmpty {
                        try await writer.write(Array(message.data))
                    }
                    reply.offset = writer.offset
                    if message.action == .commit {
                        try await writer.commit(size: writer.total, expected: expected, labels: message.labels)
                        reply.digest = writer.digest.description
                        try await response.write(reply)
                        return  // a committed writer is done, as in containerd
                    }
                    reply.digest = writer.digest.description
                case .UNRECOGNIZED(let value):
                    throw BerthError.invalidArgument("write action \(value) unknown")
                }
                try await response.write(reply)
                guard let next = try await requests.next() else { return }
                message = next
            }
        }
    }
}

extension APIContentStatus {
    init(_ status: IngestStatus) {
        self.init()
        ref = status.ref
        offset = status.offset
        total = status.total
        startedAt = .init(status.startedAt)
        updatedAt = .init(status.updatedAt)
        expected = status.expected?.description ?? ""
    }
}
