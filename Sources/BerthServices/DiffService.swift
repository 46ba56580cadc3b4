import BerthAPI
import BerthCore
import BerthSnapshots
import GRPCCore
import Logging
import SwiftProtobuf
import Synchronization

/// `containerd.services.diff.v1.Diff`.
public struct DiffService: Containerd_Services_Diff_V1_Diff.SimpleServiceProtocol {
    let differ: Differ
    let logger: Logger

    public init(differ: Differ, logger: Logger) {
        self.differ = differ
        self.logger = logger
    }

    public func apply(request: Containerd_Services_Diff_V1_ApplyRequest, context: ServerContext) async throws -> Containerd_Services_Diff_V1_ApplyResponse {
        try await handle(logger, "Diff/Apply") {
            let layer = try Descriptor(request.diff, field: "diff")
            let namespace = try RequestContext.currentNamespace()
            // The apply runs on a Dispatch thread, where Task.isCancelled is always false: a
            // flag set by the call's cancellation handler stops it between entries.
            let cancelled = CancellationFlag()
            let applied = try await withTaskCancellationHandler {
                try await differ.apply(namespace, layer: layer, mounts: request.mounts.map(Mount.init),
                                       shouldContinue: { !cancelled.isSet })
            } onCancel: {
                cancelled.set()
            }
            var response = Containerd_Services_Diff_V1_ApplyResponse()
            response.applied = .init(applied)
            return response
        }
    }

    public func diff(request: Containerd_Services_Diff_V1_DiffRequest, context: ServerContext) async throws -> Containerd_Services_Diff_V1_DiffResponse {
        try await handle(logger, "Diff/Diff") {
            let descriptor = try await differ.diff(try RequestContext.currentNamespace(), lower: request.left.map(Mount.init),
                                                   upper: request.right.map(Mount.init), mediaType: request.mediaType,
                                                   ref: request.ref, labels: request.labels, lease: RequestContext.lease)
            var response = Containerd_Services_Diff_V1_DiffResponse()
            response.diff = .init(descriptor)
            return response
        }
    }
}

/// Set once, read from any thread.
final class CancellationFlag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .relaxed) }
    func set() { value.store(true, ordering: .relaxed) }
}
