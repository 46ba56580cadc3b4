import BerthCore

/// A call's outcome as ttrpc carries it: a `google.rpc.Status` with a gRPC code.
public struct TTRPCStatus: Sendable, Hashable, CustomStringConvertible {
    /// A gRPC status code. Kept as its number, so codes this side does not name survive a round trip.
    public struct Code: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
        public var rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }

        public static let ok = Code(rawValue: 0)
        public static let canceled = Code(rawValue: 1)
        public static let unknown = Code(rawValue: 2)
        public static let invalidArgument = Code(rawValue: 3)
        public static let deadlineExceeded = Code(rawValue: 4)
        public static let notFound = Code(rawValue: 5)
        public static let alreadyExists = Code(rawValue: 6)
        public static let permissionDenied = Code(rawValue: 7)
        public static let resourceExhausted = Code(rawValue: 8)
        public static let failedPrecondition = Code(rawValue: 9)
        public static let aborted = Code(rawValue: 10)
        public static let outOfRange = Code(rawValue: 11)
        public static let unimplemented = Code(rawValue: 12)
        public static let `internal` = Code(rawValue: 13)
        public static let unavailable = Code(rawValue: 14)
        public static let dataLoss = Code(rawValue: 15)
        public static let unauthenticated = Code(rawValue: 16)

        private static let names = [
            "OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound", "AlreadyExists",
            "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange",
            "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated",
        ]

        /// The gRPC name, e.g. `NotFound`, or `Code(42)` for a number it does not know.
        public var description: String {
            Self.names.indices.contains(Int(rawValue)) ? Self.names[Int(rawValue)] : "Code(\(rawValue))"
        }
    }

    public var code: Code
    public var message: String
    /// The encoded `google.protobuf.Any` details, kept as they came and otherwise ignored.
    public var details: [[UInt8]]

    public init(code: Code, message: String, details: [[UInt8]] = []) {
        self.code = code
        self.message = message
        self.details = details
    }

    /// `ttrpc: <Code>: <message>`, the shape Go's status errors print.
    public var description: String { "ttrpc: \(code): \(message)" }
}

extension TTRPCStatus {
    /// The status a `BerthError` travels as: each code maps to the gRPC code of the same name.
    public init(_ error: BerthError) {
        self.init(code: Code(error.code), message: error.description)
    }

    /// The status a handler's error becomes on the wire: a ``TTRPCError`` keeps its status, a
    /// `BerthError` maps by code, `CancellationError` becomes `canceled`, anything else `unknown`
    /// with its description (as containerd's `errdefs.ToGRPC`).
    public init(from error: any Error) {
        switch error {
        case let error as TTRPCError: self = error.status
        case let error as BerthError: self.init(error)
        case is CancellationError: self.init(code: .canceled, message: "context canceled")
        default: self.init(code: .unknown, message: String(describing: error))
        }
    }
}

extension TTRPCStatus.Code {
    /// The gRPC code for a `BerthError` code; the two lists name the same codes.
    public init(_ code: BerthError.Code) {
        self = switch code {
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
        case .cancelled: .canceled
        case .deadlineExceeded: .deadlineExceeded
        case .permissionDenied: .permissionDenied
        case .internal: .internal
        case .unknown: .unknown
        }
    }

    /// The `BerthError` code for this gRPC code. `ok` and numbers without a name become
    /// `internal`; `unauthenticated` becomes `permissionDenied`.
    public var berthCode: BerthError.Code {
        switch self {
        case .canceled: .cancelled
        case .invalidArgument: .invalidArgument
        case .deadlineExceeded: .deadlineExceeded
        case .notFound: .notFound
        case .alreadyExists: .alreadyExists
        case .permissionDenied, .unauthenticated: .permissionDenied
        case .resourceExhausted: .resourceExhausted
        case .failedPrecondition: .failedPrecondition
        case .aborted: .aborted
        case .outOfRange: .outOfRange
        case .unimplemented: .unimplemented
        case .unavailable: .unavailable
        case .dataLoss: .dataLoss
        case .unknown: .unknown
        default: .internal
        }
    }
}
