import GRPCCore

/// A method this transport serves itself: the call's task runs `serve` straight away, without
/// the per-call machinery of GRPCCore's server (its executor, request and response sequences,
/// interceptors and codecs).
///
/// That machinery is most of the cost of a small call: a `Content/Info` or `Containers/Get` took
/// about twice the CPU through it. berthd registers its unary and server-streaming methods that a
/// container's life calls (`ctr run --rm` makes about forty calls); the rest, and every call that
/// carries a deadline (`grpc-timeout`, which GRPCCore enforces), go through GRPCCore as before.
///
/// `serve` gets the request message (exactly one, as for any unary or server-streaming call) and
/// sends its replies through the ``DirectCall``. Returning ends the call with status OK; throwing
/// an `RPCError` ends it with that error's code, message and metadata; any other error ends it
/// with UNKNOWN.
public struct DirectMethod: Sendable {
    public typealias Serve = @Sendable (_ request: [UInt8], _ call: DirectCall) async throws -> Void

    public let descriptor: MethodDescriptor
    let serve: Serve

    public init(_ descriptor: MethodDescriptor, serve: @escaping Serve) {
        self.descriptor = descriptor
        self.serve = serve
    }

    /// `/package.Service/Method`, as it arrives in `:path`.
    var path: String { "/\(descriptor.service.fullyQualifiedService)/\(descriptor.method)" }
}

/// One call of a ``DirectMethod``: what the client sent with it, and where replies go.
public struct DirectCall: Sendable {
    public let metadata: Metadata
    public let context: ServerContext
    let connection: HTTP2Connection
    let streamID: UInt32

    /// Sends one reply message (the response headers go first, with the first message).
    public func send(_ message: [UInt8]) async throws {
        try await connection.write(.message(message), streamID: streamID)
    }
}
