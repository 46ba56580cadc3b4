import BerthCore
import GRPCCore

/// What containerd clients send in gRPC metadata with every call.
public enum RequestContext {
    /// `containerd-namespace`; `default` when a client sends none.
    @TaskLocal public static var namespace: String = "default"
    /// `containerd-lease`: the lease that holds whatever this call creates.
    @TaskLocal public static var lease: String?

    public static let namespaceKey = "containerd-namespace"
    public static let leaseKey = "containerd-lease"

    /// The request's namespace, validated.
    static func currentNamespace() throws(BerthError) -> Namespace {
        try Namespace(namespace)
    }

    /// Runs `body` with the namespace and lease a call's `metadata` names (`default` and none
    /// when it names neither).
    public static func withValues<T: Sendable>(from metadata: Metadata, _ body: () async throws -> T) async throws -> T {
        let namespace = metadata[stringValues: namespaceKey].first(where: { _ in true }) ?? "default"
        let lease = metadata[stringValues: leaseKey].first(where: { _ in true })
        return try await $namespace.withValue(namespace) {
            try await $lease.withValue(lease) { try await body() }
        }
    }
}

/// Lifts the namespace and lease out of metadata into ``RequestContext`` for the whole call,
/// including the response stream a handler produces after `next` returns.
public struct NamespaceInterceptor: ServerInterceptor {
    private let afterEachCall: @Sendable () -> Void

    /// `afterEachCall` runs when each call's handler has returned (berthd's idle memory release
    /// counts calls there, saving an interceptor of its own on every call).
    public init(afterEachCall: @escaping @Sendable () -> Void = {}) {
        self.afterEachCall = afterEachCall
    }

    public func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingServerRequest<Input>,
        context: ServerContext,
        next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
    ) async throws -> StreamingServerResponse<Output> {
        let metadata = request.metadata
        defer { afterEachCall() }
        return try await RequestContext.withValues(from: metadata) {
            var response = try await next(request, context)
            if case .success(var contents) = response.accepted {
                let producer = contents.producer
                contents.producer = { writer in
                    try await RequestContext.withValues(from: metadata) { try await producer(writer) }
                }
                response.accepted = .success(contents)
            }
            return response
        }
    }
}
