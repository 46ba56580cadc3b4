import BerthCore
import BerthTTRPC
import Glibc

/// A protobuf message this module encodes and decodes by hand (no SwiftProtobuf, to keep the
/// shim small). Field numbers are containerd's; the tests cross-check them against the
/// generated types in BerthAPI.
public protocol ProtoMessage: Sendable {
    init()
    /// Called for each field of an encoded message; unknown fields are ignored.
    mutating func decodeField(_ field: Int, _ value: ProtoReader.Value) throws(BerthError)
    /// Appends this message's fields.
    func encode(to writer: inout ProtoWriter)
}

extension ProtoMessage {
    /// Decodes `bytes`; fields this type does not know are skipped.
    ///
    /// - Throws: `BerthError.invalidArgument` for malformed protobuf.
    public init(decoding bytes: [UInt8]) throws(BerthError) {
        self.init()
        var reader = ProtoReader(bytes, what: String(describing: Self.self))
        while let (field, value) = try reader.next() {
            try decodeField(field, value)
        }
    }

    public init(decoding bytes: ArraySlice<UInt8>) throws(BerthError) {
        try self.init(decoding: Array(bytes))
    }

    /// The wire encoding.
    public func encoded() -> [UInt8] {
        var writer = ProtoWriter()
        encode(to: &writer)
        return writer.bytes
    }
}

extension ProtoWriter {
    public mutating func bool(_ field: Int, _ value: Bool) {
        varint(field, value ? 1 : 0)
    }

    public mutating func uint(_ field: Int, _ value: UInt64) {
        varint(field, value)
    }

    public mutating func uint32(_ field: Int, _ value: UInt32) {
        varint(field, UInt64(value))
    }

    /// An embedded message, always written (even when empty).
    public mutating func message(_ field: Int, _ value: some ProtoMessage) {
        lengthDelimited(field, value.encoded())
    }

    /// An embedded message written only when present.
    public mutating func message(_ field: Int, _ value: (some ProtoMessage)?) {
        if let value { lengthDelimited(field, value.encoded()) }
    }

    /// A packed `repeated uint64`/`uint32`, omitted when empty.
    public mutating func packed(_ field: Int, _ values: [UInt64]) {
        guard !values.isEmpty else { return }
        var raw: [UInt8] = []
        for var value in values {
            while value >= 0x80 {
                raw.append(UInt8(truncatingIfNeeded: value) | 0x80)
                value >>= 7
            }
            raw.append(UInt8(value))
        }
        lengthDelimited(field, raw)
    }
}

extension ProtoReader.Value {
    /// The value as a string, or `invalidArgument` when the wire type is wrong.
    func requireString(_ what: String) throws(BerthError) -> String {
        guard let value = string else { throw .invalidArgument("\(what): expected a string") }
        return value
    }

    func requireVarint(_ what: String) throws(BerthError) -> UInt64 {
        guard let value = integer else { throw .invalidArgument("\(what): expected a varint") }
        return value
    }

    func requireBytes(_ what: String) throws(BerthError) -> [UInt8] {
        guard let value = bytes else { throw .invalidArgument("\(what): expected bytes") }
        return value
    }

    func requireMessage<M: ProtoMessage>(_ type: M.Type) throws(BerthError) -> M {
        guard case .lengthDelimited(let raw) = self else {
            throw .invalidArgument("\(M.self): expected an embedded message")
        }
        return try M(decoding: raw)
    }

    var bool: Bool { (integer ?? 0) != 0 }
    var uint32: UInt32 { UInt32(truncatingIfNeeded: integer ?? 0) }
    var uint64: UInt64 { integer ?? 0 }
    var int64: Int64 { Int64(bitPattern: integer ?? 0) }
    var int32: Int32 { Int32(truncatingIfNeeded: integer ?? 0) }
}

// MARK: - Well-known types

/// `google.protobuf.Timestamp`.
public struct ProtoTimestamp: ProtoMessage, Hashable {
    public var seconds: Int64 = 0
    public var nanos: Int32 = 0

    public init() {}
    public init(seconds: Int64, nanos: Int32) {
        self.seconds = seconds
        self.nanos = nanos
    }

    /// The current wall-clock time.
    public static func now() -> ProtoTimestamp {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return ProtoTimestamp(seconds: Int64(spec.tv_sec), nanos: Int32(spec.tv_nsec))
    }

    public mutating func decodeField(_ field: Int, _ value: ProtoReader.Value) throws(BerthError) {
        switch field {
        case 1: seconds = value.int64
        case 2: nanos = value.int32
        default: break
        }
    }

    public func encode(to writer: inout ProtoWriter) {
        writer.int(1, seconds)
        writer.int(2, Int64(nanos))
    }
}

/// `google.protobuf.Any`. containerd's type URLs are bare proto names
/// (`containerd.events.TaskExit`), never `type.googleapis.com/…`.
public struct ProtoAny: ProtoMessage, Hashable {
    public var typeURL: String = ""
    public var value: [UInt8] = []

    public init() {}
    public init(typeURL: String, value: [UInt8]) {
        self.typeURL = typeURL
        self.value = value
    }
    public init(typeURL: String, message: some ProtoMessage) {
        self.init(typeURL: typeURL, value: message.encoded())
    }

    /// The type URL without a `type.googleapis.com/`-style host prefix.
    public var typeName: String {
        guard let slash = typeURL.lastIndex(of: "/") else { return typeURL }
        // JSON-registered types keep their path (types.containerd.io/opencontainers/...).
        if typeURL.hasPrefix("types.containerd.io/") { return typeURL }
        return String(typeURL[typeURL.index(after: slash)...])
    }

    public mutating func decodeField(_ field: Int, _ value: ProtoReader.Value) throws(BerthError) {
        switch field {
        case 1: typeURL = try value.requireString("Any.type_url")
        case 2: self.value = try value.requireBytes("Any.value")
        default: break
        }
    }

    public func encode(to writer: inout ProtoWriter) {
        writer.string(1, typeURL)
        writer.bytes(2, value)
    }
}

/// `containerd.types.Mount`.
public struct ProtoMount: ProtoMessage, Hashable {
    public var type = ""
    public var source = ""
    public var target = ""
    public var options: [String] = []

    public init() {}
    public init(type: String, source: String, target: String = "", options: [String] = []) {
        self.type = type
        self.source = source
        self.target = target
        self.options = options
    }

    public mutating func decodeField(_ field: Int, _ value: ProtoReader.Value) throws(BerthError) {
        switch field {
        case 1: type = try value.requireString("Mount.type")
        case 2: source = try value.requireString("Mount.source")
        case 3: target = try value.requireString("Mount.target")
        case 4: options.append(try value.requireString("Mount.options"))
        default: break
        }
    }

    public func encode(to writer: inout ProtoWriter) {
        writer.string(1, type)
        writer.string(2, source)
        writer.string(3, target)
        for option in options { writer.lengthDelimited(4, Array(option.utf8)) }
    }
}

/// `containerd.v1.types.Status`.
public enum ProtoTaskStatus: UInt64, Sendable {
    case unknown = 0, created = 1, running = 2, stopped = 3, paused = 4, pausing = 5
}

/// `google.protobuf.Empty`.
public struct ProtoEmpty: ProtoMessage, Hashable {
    public init() {}
    public mutating func decodeField(_ field: Int, _ value: ProtoReader.Value) throws(BerthError) {}
    public func encode(to writer: inout ProtoWriter) {}
}
