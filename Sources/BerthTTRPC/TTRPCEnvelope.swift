import BerthCore

/// One metadata entry on the wire (`ttrpc.KeyValue`: 1 key, 2 value).
public struct TTRPCKeyValue: Sendable, Hashable {
    public var key: String
    public var value: String
    public init(key: String, value: String) {
        self.key = key
        self.value = value
    }
}

/// The message a Request frame carries (`ttrpc.Request`).
///
/// Fields: 1 `string service` (fully qualified, e.g. `containerd.task.v2.Task`), 2 `string method`
/// (bare, e.g. `Create`), 3 `bytes payload` (the marshalled request), 4 `int64 timeout_nano`
/// (time left until the caller's deadline; 0 means none), 5 `repeated KeyValue metadata`.
public struct TTRPCRequest: Sendable, Hashable {
    public var service: String
    public var method: String
    public var payload: [UInt8]
    public var timeoutNanoseconds: Int64
    public var metadata: [TTRPCKeyValue]

    public init(service: String, method: String, payload: [UInt8] = [], timeoutNanoseconds: Int64 = 0, metadata: [TTRPCKeyValue] = []) {
        self.service = service
        self.method = method
        self.payload = payload
        self.timeoutNanoseconds = timeoutNanoseconds
        self.metadata = metadata
    }

    /// Decodes a request, skipping fields it does not know.
    ///
    /// - Throws: `BerthError.invalidArgument` when the bytes are not a valid protobuf message.
    public init(decoding bytes: [UInt8]) throws(BerthError) {
        self.init(service: "", method: "")
        var reader = ProtoReader(bytes, what: "ttrpc request")
        while let (field, value) = try reader.next() {
            switch field {
            case 1: service = value.string ?? service
            case 2: method = value.string ?? method
            case 3: payload = value.bytes ?? payload
            case 4: timeoutNanoseconds = value.integer.map { Int64(bitPattern: $0) } ?? timeoutNanoseconds
            case 5:
                if let entry = value.bytes { metadata.append(try TTRPCKeyValue(decoding: entry)) }
            default: break
            }
        }
    }

    public func encoded() -> [UInt8] {
        var writer = ProtoWriter()
        writer.string(1, service)
        writer.string(2, method)
        writer.bytes(3, payload)
        writer.int(4, timeoutNanoseconds)
        for entry in metadata {
            writer.lengthDelimited(5, entry.encoded())
        }
        return writer.bytes
    }
}

extension TTRPCKeyValue {
    init(decoding bytes: [UInt8]) throws(BerthError) {
        self.init(key: "", value: "")
        var reader = ProtoReader(bytes, what: "ttrpc metadata entry")
        while let (field, value) = try reader.next() {
            switch field {
            case 1: key = value.string ?? key
            case 2: self.value = value.string ?? self.value
            default: break
            }
        }
    }

    func encoded() -> [UInt8] {
        var writer = ProtoWriter()
        writer.string(1, key)
        writer.string(2, value)
        return writer.bytes
    }
}

/// The message a Response frame carries (`ttrpc.Response`: 1 `google.rpc.Status status`,
/// 2 `bytes payload`). A success leaves `status` unset, so an empty reply encodes to zero bytes.
public struct TTRPCResponse: Sendable, Hashable {
    public var status: TTRPCStatus?
    public var payload: [UInt8]

    public init(status: TTRPCStatus? = nil, payload: [UInt8] = []) {
        self.status = status
        self.payload = payload
    }

    /// Decodes a response, skipping fields it does not know.
    ///
    /// - Throws: `BerthError.invalidArgument` when the bytes are not a valid protobuf message.
    public init(decoding bytes: [UInt8]) throws(BerthError) {
        self.init()
        var reader = ProtoReader(bytes, what: "ttrpc response")
        while let (field, value) = try reader.next() {
            switch field {
            case 1:
                if let status = value.bytes { self.status = try TTRPCStatus(decoding: status) }
            case 2: payload = value.bytes ?? payload
            default: break
            }
        }
    }

    public func encoded() -> [UInt8] {
        var writer = ProtoWriter()
        if let status {
            writer.lengthDelimited(1, status.encoded())
        }
        writer.bytes(2, payload)
        return writer.bytes
    }
}

extension TTRPCStatus {
    /// Decodes a `google.rpc.Status` (1 `int32 code`, 2 `string message`, 3 `repeated Any details`).
    ///
    /// - Throws: `BerthError.invalidArgument` when the bytes are not a valid protobuf message.
    public init(decoding bytes: [UInt8]) throws(BerthError) {
        self.init(code: .ok, message: "")
        var reader = ProtoReader(bytes, what: "google.rpc.Status")
        while let (field, value) = try reader.next() {
            switch field {
            case 1: code = value.integer.map { Code(rawValue: Int32(truncatingIfNeeded: $0)) } ?? code
            case 2: message = value.string ?? message
            case 3: details.append(value.bytes ?? [])
            default: break
            }
        }
    }

    /// Encodes this status as a `google.rpc.Status` message.
    public func encoded() -> [UInt8] {
        var writer = ProtoWriter()
        writer.int(1, Int64(code.rawValue))
        writer.string(2, message)
        for detail in details {
            writer.lengthDelimited(3, detail)
        }
        return writer.bytes
    }
}
