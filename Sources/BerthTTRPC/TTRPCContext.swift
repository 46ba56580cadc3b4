import BerthSystem

/// What a handler knows about the call it serves.
public struct TTRPCContext: Sendable {
    /// The fully qualified service name, e.g. `containerd.task.v2.Task`.
    public let service: String
    /// The bare method name, e.g. `Wait`.
    public let method: String
    /// The stream the request came on (odd, chosen by the client).
    public let streamID: UInt32
    /// The request's metadata, keys lower-cased, values in the order they came.
    public let metadata: [String: [String]]
    /// When the client stops waiting, from the request's `timeout_nano`; nil when it sent none.
    /// Handlers are not interrupted at the deadline; a long one should check ``isExpired``.
    public let deadline: MonotonicInstant?

    public init(service: String, method: String, streamID: UInt32, metadata: [String: [String]], deadline: MonotonicInstant?) {
        self.service = service
        self.method = method
        self.streamID = streamID
        self.metadata = metadata
        self.deadline = deadline
    }

    /// The first value for `key` (compared lower-cased), e.g. `containerd-namespace-ttrpc`.
    public func metadataValue(_ key: String) -> String? {
        metadata[key.lowercased()]?.first
    }

    /// True once the deadline has passed.
    public var isExpired: Bool {
        deadline.map { MonotonicInstant.now >= $0 } ?? false
    }
}

/// Metadata keys containerd sends on ttrpc calls.
public enum TTRPCMetadataKey {
    /// The containerd namespace of the call (`namespaces.WithNamespace` sets it on every call).
    public static let namespace = "containerd-namespace-ttrpc"
}

extension TTRPCContext {
    init(_ request: TTRPCRequest, streamID: UInt32, receivedAt: MonotonicInstant) {
        var metadata: [String: [String]] = [:]
        for entry in request.metadata {
            metadata[entry.key.lowercased(), default: []].append(entry.value)
        }
        let deadline = request.timeoutNanoseconds > 0 ? receivedAt.advanced(byNanoseconds: request.timeoutNanoseconds) : nil
        self.init(service: request.service, method: request.method, streamID: streamID, metadata: metadata, deadline: deadline)
    }
}
