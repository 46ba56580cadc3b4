import BerthCore
import GRPCCore
import Logging

extension BerthError.Code {
    /// The one mapping from Berth's error codes onto gRPC's, as containerd's errdefs does it.
    var rpcCode: RPCError.Code {
        switch self {
        case .invalidArgument: .invalidArgument
        case .notFound: .notFound
        case .alreadyExists: .alreadyExists
        case .failedPrecondition: .failedPrecondition
        case .unavailable: .unavailable
        case .outOfRange: .outOfRange
        case .unimplemented: .unimplemented
        case .aborted: .aborted
        case .dataLoss: .dataLoss
        case .resourceExhausted: .resourceExhausted
        case .cancelled: .cancelled
        case .deadlineExceeded: .deadlineExceeded
        case .permissionDenied: .permissionDenied
        case .internal: .internalError
        case .unknown: .unknown
        }
    }
}

extension RPCError {
    init(_ error: BerthError) {
        self.init(code: error.code.rpcCode, message: error.description)
    }
}

/// Runs a handler body and turns any error into the `RPCError` containerd clients expect.
/// Internal errors are logged, since the client sees only their message.
func handle<T: Sendable>(_ logger: Logger, _ method: String, _ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let error as BerthError {
        if error.code == .internal {
            logger.error("\(method) failed", metadata: ["error": "\(error)"])
        } else {
            logger.debug("\(method) refused", metadata: ["code": "\(error.code)", "error": "\(error.message)"])
        }
        throw RPCError(error)
    } catch let error as RPCError {
        throw error
    } catch is CancellationError {
        throw RPCError(code: .cancelled, message: "\(method): cancelled")
    } catch {
        logger.error("\(method) failed", metadata: ["error": "\(error)"])
        throw RPCError(code: .internalError, message: "\(method): \(error)")
    }
}
