import BerthCore

/// The little of the protobuf wire format the ttrpc envelope needs: varints and length-delimited
/// fields. Payloads stay opaque bytes; callers encode them with SwiftProtobuf.
public struct ProtoWriter: Sendable {
    public private(set) var bytes: [UInt8] = []

    public init() {}

    /// Appends a varint field; proto3 omits zero, and so does this.
    public mutating func varint(_ field: Int, _ value: UInt64) {
        guard value != 0 else { return }
        key(field, wireType: 0)
        rawVarint(value)
    }

    /// Appends an `int64`/`int32` field (negative values take ten bytes, as protobuf says).
    public mutating func int(_ field: Int, _ value: Int64) {
        varint(field, UInt64(bitPattern: value))
    }

    /// Appends a `string` field, omitted when empty.
    public mutating func string(_ field: Int, _ value: String) {
        guard !value.isEmpty else { return }
        lengthDelimited(field, Array(value.utf8))
    }

    /// Appends a `bytes` field, omitted when empty.
    public mutating func bytes(_ field: Int, _ value: [UInt8]) {
        guard !value.isEmpty else { return }
        lengthDelimited(field, value)
    }

    /// Appends an embedded message or repeated element, even when empty (its presence matters).
    public mutating func lengthDelimited(_ field: Int, _ value: [UInt8]) {
        key(field, wireType: 2)
        rawVarint(UInt64(value.count))
        bytes.append(contentsOf: value)
    }

    private mutating func key(_ field: Int, wireType: UInt64) {
        rawVarint(UInt64(field) << 3 | wireType)
    }

    private mutating func rawVarint(_ value: UInt64) {
        var value = value
        while value >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        bytes.append(UInt8(value))
    }
}

/// Walks the fields of one encoded message. Fields it is not asked about are skipped, whatever
/// their wire type, so newer peers can add fields.
public struct ProtoReader {
    public enum Value {
        case varint(UInt64)
        case lengthDelimited(ArraySlice<UInt8>)
        /// fixed32 and fixed64 fields, which the envelope never uses.
        case fixed
    }

    private let bytes: [UInt8]
    private var offset = 0
    private let what: () -> String

    /// - Parameter what: names the message in errors, e.g. `ttrpc request`; evaluated only for
    ///   an error (describing a type at every decode would map the reflection code into the shim).
    public init(_ bytes: [UInt8], what: @escaping @autoclosure () -> String) {
        self.bytes = bytes
        self.what = what
    }

    /// The next field, or nil at the end of the message.
    ///
    /// - Throws: `BerthError.invalidArgument` for a truncated field, an overlong varint, field
    ///   number 0 or a group (wire types 3 and 4).
    public mutating func next() throws(BerthError) -> (field: Int, value: Value)? {
        guard offset < bytes.count else { return nil }
        let key = try rawVarint()
        let field = Int(truncatingIfNeeded: key >> 3)
        guard field > 0 else { throw malformed("field number 0") }
        switch key & 7 {
        case 0:
            return (field, .varint(try rawVarint()))
        case 1:
            try skip(8)
            return (field, .fixed)
        case 2:
            let length = try rawVarint()
            guard length <= UInt64(bytes.count - offset) else { throw malformed("field \(field) runs past the end") }
            let start = offset
            offset += Int(length)
            return (field, .lengthDelimited(bytes[start..<offset]))
        case 5:
            try skip(4)
            return (field, .fixed)
        default:
            throw malformed("unsupported wire type \(key & 7) in field \(field)")
        }
    }

    private mutating func skip(_ count: Int) throws(BerthError) {
        guard bytes.count - offset >= count else { throw malformed("truncated fixed-width field") }
        offset += count
    }

    private mutating func rawVarint() throws(BerthError) -> UInt64 {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while offset < bytes.count {
            let byte = bytes[offset]
            offset += 1
            guard shift < 64 else { throw malformed("varint longer than ten bytes") }
            value |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return value }
            shift += 7
        }
        throw malformed("truncated varint")
    }

    private func malformed(_ detail: String) -> BerthError {
        .invalidArgument("\(what()): malformed protobuf: \(detail)")
    }
}

extension ProtoReader.Value {
    public var string: String? {
        if case .lengthDelimited(let bytes) = self { return String(decoding: bytes, as: UTF8.self) }
        return nil
    }

    public var bytes: [UInt8]? {
        if case .lengthDelimited(let bytes) = self { return Array(bytes) }
        return nil
    }

    public var integer: UInt64? {
        if case .varint(let value) = self { return value }
        return nil
    }
}
