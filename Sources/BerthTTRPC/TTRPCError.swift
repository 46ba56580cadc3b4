import BerthCore

/// What a ttrpc call throws: either the peer (or this side, for a deadline or an oversized
/// message) answered with a non-OK status, or the connection is gone.
///
/// The two are kept apart because callers treat them differently: containerd ignores `closed`
/// from a shim's Shutdown, and its on-close handling cleans up a dead shim.
public enum TTRPCError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The call failed with this status.
    case status(TTRPCStatus)
    /// The connection was closed or broke before the response arrived (`ttrpc: closed`).
    case closed

    /// A status error with `code` and `message`; handlers throw this to choose their wire status.
    public init(_ code: TTRPCStatus.Code, _ message: String) {
        self = .status(TTRPCStatus(code: code, message: message))
    }

    /// The status this error travels as; `closed` counts as `unavailable`.
    public var status: TTRPCStatus {
        switch self {
        case .status(let status): status
        case .closed: TTRPCStatus(code: .unavailable, message: "ttrpc: closed")
        }
    }

    /// The gRPC code; `unavailable` for `closed`.
    public var code: TTRPCStatus.Code { status.code }

    /// The error as a `BerthError` with the matching code; `closed` becomes `unavailable`.
    public var berthError: BerthError {
        BerthError(code.berthCode, status.message)
    }

    public var description: String {
        switch self {
        case .status(let status): status.description
        case .closed: "ttrpc: closed"
        }
    }

    /// `ResourceExhausted` with the message ttrpc uses for a frame over 4 MiB.
    static func messageTooLarge(_ length: Int) -> TTRPCError {
        TTRPCError(.resourceExhausted, "message length \(length) exceed maximum message size of \(TTRPCFrame.maxDataLength)")
    }
}
