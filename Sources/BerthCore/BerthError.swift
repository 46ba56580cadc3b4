/// The one error type that crosses Berth's module boundaries.
///
/// Its `code` maps one-to-one onto the gRPC status codes containerd clients branch on
/// (`errdefs` in containerd), so a service adapter can translate it without guessing.
/// Messages start with the object and its identifier, e.g. `image "busybox:1": not found`.
public struct BerthError: Error, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        case invalidArgument
        case notFound
        case alreadyExists
        case failedPrecondition
        case unavailable
        case outOfRange
        case unimplemented
        case aborted
        case dataLoss
        case resourceExhausted
        case cancelled
        case deadlineExceeded
        case permissionDenied
        case `internal`
        /// An error nobody classified, passed on as it came (containerd's `errdefs.ErrUnknown`):
        /// a shim's answer when runc fails, say.
        case unknown
    }

    public var code: Code
    public var message: String
    /// The lower-level error this one explains, kept for logs.
    public var underlying: (any Error & Sendable)?

    public init(_ code: Code, _ message: String, underlying: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.underlying = underlying
    }

    public var description: String {
        if let underlying { return "\(message): \(underlying)" }
        return message
    }

    public static func invalidArgument(_ message: String) -> BerthError { .init(.invalidArgument, message) }
    public static func notFound(_ message: String) -> BerthError { .init(.notFound, message) }
    public static func alreadyExists(_ message: String) -> BerthError { .init(.alreadyExists, message) }
    public static func failedPrecondition(_ message: String) -> BerthError { .init(.failedPrecondition, message) }
    public static func unavailable(_ message: String) -> BerthError { .init(.unavailable, message) }
    public static func unimplemented(_ message: String) -> BerthError { .init(.unimplemented, message) }
    public static func `internal`(_ message: String, underlying: (any Error & Sendable)? = nil) -> BerthError {
        .init(.internal, message, underlying: underlying)
    }
}

extension BerthError {
    /// Wraps any error as a `BerthError`, keeping one that already is.
    public static func wrap(_ error: any Error, _ context: @autoclosure () -> String) -> BerthError {
        if let error = error as? BerthError { return error }
        return .internal(context(), underlying: SendableErrorBox(error))
    }
}

/// Carries a non-`Sendable` error's description across concurrency domains.
public struct SendableErrorBox: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ error: any Error) { self.description = String(describing: error) }
}
