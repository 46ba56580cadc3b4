import BerthAPI
import BerthGRPC
import BerthServices
import GRPCCore
import SwiftProtobuf

/// The services' methods that the transport serves without GRPCCore's per-call machinery (see
/// ``DirectMethod``): every unary and server-streaming call of a container's life, from
/// `ctr run`'s image and content reads to the task's Wait and Delete. Each runs the service's own
/// handler, so the two paths answer alike; this adds what GRPCCore and ``NamespaceInterceptor``
/// do around it: decoding, the namespace and lease in ``RequestContext``, encoding, and the
/// call's count for the idle memory release.
struct DirectMethods {
    let afterEachCall: @Sendable () -> Void

    func all(_ services: Services) -> [DirectMethod] {
        typealias Version = Containerd_Services_Version_V1_Version.Method
        typealias Namespaces = Containerd_Services_Namespaces_V1_Namespaces.Method
        typealias Images = Containerd_Services_Images_V1_Images.Method
        typealias Content = Containerd_Services_Content_V1_Content.Method
        typealias Leases = Containerd_Services_Leases_V1_Leases.Method
        typealias Containers = Containerd_Services_Containers_V1_Containers.Method
        typealias Snapshots = Containerd_Services_Snapshots_V1_Snapshots.Method
        typealias Tasks = Containerd_Services_Tasks_V1_Tasks.Method
        let (content, containers, snapshots, tasks) = (services.content, services.containers, services.snapshots, services.tasks)
        return [
            unary(Version.Version.descriptor, services.version.version),
            unary(Namespaces.Get.descriptor, services.namespaces.get),
            unary(Namespaces.List.descriptor, services.namespaces.list),
            unary(Images.Get.descriptor, services.images.get),
            unary(Images.List.descriptor, services.images.list),
            unary(Content.Info.descriptor, content.info),
            serverStreaming(Content.Read.descriptor, content.read),
            unary(Leases.Create.descriptor, services.leases.create),
            unary(Leases.Delete.descriptor, services.leases.delete),
            unary(Containers.Get.descriptor, containers.get),
            unary(Containers.List.descriptor, containers.list),
            serverStreaming(Containers.ListStream.descriptor, containers.listStream),
            unary(Containers.Create.descriptor, containers.create),
            unary(Containers.Delete.descriptor, containers.delete),
            unary(Snapshots.Prepare.descriptor, snapshots.prepare),
            unary(Snapshots.View.descriptor, snapshots.view),
            unary(Snapshots.Mounts.descriptor, snapshots.mounts),
            unary(Snapshots.Stat.descriptor, snapshots.stat),
            unary(Snapshots.Remove.descriptor, snapshots.remove),
            unary(Tasks.Create.descriptor, tasks.create),
            unary(Tasks.Start.descriptor, tasks.start),
            unary(Tasks.Delete.descriptor, tasks.delete),
            unary(Tasks.DeleteProcess.descriptor, tasks.deleteProcess),
            unary(Tasks.Get.descriptor, tasks.get),
            unary(Tasks.List.descriptor, tasks.list),
            unary(Tasks.Kill.descriptor, tasks.kill),
            unary(Tasks.Exec.descriptor, tasks.exec),
            unary(Tasks.Pause.descriptor, tasks.pause),
            unary(Tasks.Resume.descriptor, tasks.resume),
            unary(Tasks.ListPids.descriptor, tasks.listPids),
            unary(Tasks.Metrics.descriptor, tasks.metrics),
            unary(Tasks.Wait.descriptor, tasks.wait),
        ]
    }

    func unary<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
        _ descriptor: MethodDescriptor,
        _ handler: @escaping @Sendable (Request, ServerContext) async throws -> Response
    ) -> DirectMethod {
        DirectMethod(descriptor) { [afterEachCall] bytes, call in
            defer { afterEachCall() }
            let request: Request = try Self.decode(bytes)
            let response = try await RequestContext.withValues(from: call.metadata) { try await handler(request, call.context) }
            try await call.send(try Self.encode(response))
        }
    }

    func serverStreaming<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
        _ descriptor: MethodDescriptor,
        _ handler: @escaping @Sendable (Request, RPCWriter<Response>, ServerContext) async throws -> Void
    ) -> DirectMethod {
        DirectMethod(descriptor) { [afterEachCall] bytes, call in
            defer { afterEachCall() }
            let request: Request = try Self.decode(bytes)
            try await RequestContext.withValues(from: call.metadata) {
                try await handler(request, RPCWriter(wrapping: Replies<Response>(call: call)), call.context)
            }
        }
    }

    private static func decode<Request: SwiftProtobuf.Message>(_ bytes: [UInt8]) throws -> Request {
        do {
            return try Request(serializedBytes: bytes)
        } catch {
            throw RPCError(code: .invalidArgument, message: "cannot decode \(Request.protoMessageName): \(error)")
        }
    }

    private static func encode(_ message: some SwiftProtobuf.Message) throws -> [UInt8] {
        do {
            return try message.serializedBytes()
        } catch {
            throw RPCError(code: .internalError, message: "cannot encode \(type(of: message).protoMessageName): \(error)")
        }
    }

    /// A server-streaming handler's writer: each reply encoded and sent on the call.
    private struct Replies<Response: SwiftProtobuf.Message>: RPCWriterProtocol {
        let call: DirectCall

        func write(_ element: Response) async throws {
            try await call.send(try DirectMethods.encode(element))
        }

        func write(contentsOf elements: some Sequence<Response>) async throws {
            for element in elements { try await write(element) }
        }
    }
}
