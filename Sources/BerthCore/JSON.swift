/// A minimal JSON value and parser (no Foundation): enough for config.json, runc's log.json and
/// `runc ps`/`runc state` output in the shim, and for the label maps berthd stores as JSON (read on
/// nearly every call, where Foundation's JSONDecoder cost a twentieth of the daemon's CPU).
public enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public subscript(key: String) -> JSONValue? {
        if case .object(let members) = self { return members[key] }
        return nil
    }

    public var stringValue: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    public var arrayValue: [JSONValue]? {
        if case .array(let value) = self { return value }
        return nil
    }

    public var objectValue: [String: JSONValue]? {
        if case .object(let value) = self { return value }
        return nil
    }

    public var intValue: Int? {
        if case .number(let value) = self, value.isFinite, value == value.rounded() { return Int(value) }
        return nil
    }

    /// Parses one JSON document.
    ///
    /// - Throws: `BerthError.invalidArgument` naming the byte offset of the first defect.
    public init(parsing bytes: [UInt8]) throws(BerthError) {
        var parser = JSONParser(bytes: bytes)
        self = try parser.document()
    }

    public init(parsing text: String) throws(BerthError) {
        try self.init(parsing: Array(text.utf8))
    }

    /// Encodes a string as a JSON string literal.
    public static func quote(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}

private struct JSONParser {
    let bytes: [UInt8]
    var offset = 0

    mutating func document() throws(BerthError) -> JSONValue {
        let value = try parseValue(depth: 0)
        skipSpace()
        guard offset == bytes.count else { throw fail("trailing data") }
        return value
    }

    func fail(_ what: String) -> BerthError {
        .invalidArgument("json: \(what) at byte \(offset)")
    }

    mutating func skipSpace() {
        while offset < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[offset]) { offset += 1 }
    }

    mutating func expect(_ literal: String) throws(BerthError) {
        for byte in literal.utf8 {
            guard offset < bytes.count, bytes[offset] == byte else { throw fail("expected \(literal)") }
            offset += 1
        }
    }

    mutating func parseValue(depth: Int) throws(BerthError) -> JSONValue {
        guard depth < 200 else { throw fail("nesting too deep") }
        skipSpace()
        guard offset < bytes.count else { throw fail("unexpected end") }
        switch bytes[offset] {
        case UInt8(ascii: "{"):
            offset += 1
            var members: [String: JSONValue] = [:]
            skipSpace()
            if offset < bytes.count, bytes[offset] == UInt8(ascii: "}") { offset += 1; return .object(members) }
            while true {
                skipSpace()
                let key = try parseString()
                skipSpace()
                try expect(":")
                members[key] = try parseValue(depth: depth + 1)
                skipSpace()
                guard offset < bytes.count else { throw fail("unterminated object") }
                if bytes[offset] == UInt8(ascii: ",") { offset += 1; continue }
                if bytes[offset] == UInt8(ascii: "}") { offset += 1; return .object(members) }
                throw fail("expected , or }")
            }
        case UInt8(ascii: "["):
            offset += 1
            var elements: [JSONValue] = []
            skipSpace()
            if offset < bytes.count, bytes[offset] == UInt8(ascii: "]") { offset += 1; return .array(elements) }
            while true {
                elements.append(try parseValue(depth: depth + 1))
                skipSpace()
                guard offset < bytes.count else { throw fail("unterminated array") }
                if bytes[offset] == UInt8(ascii: ",") { offset += 1; continue }
                if bytes[offset] == UInt8(ascii: "]") { offset += 1; return .array(elements) }
                throw fail("expected , or ]")
            }
        case UInt8(ascii: "\""):
            return .string(try parseString())
        case UInt8(ascii: "t"):
            try expect("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try expect("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try expect("null")
            return .null
        default:
            let start = offset
            while offset < bytes.count, "+-0123456789.eE".utf8.contains(bytes[offset]) { offset += 1 }
            guard let number = Double(String(decoding: bytes[start..<offset], as: UTF8.self)) else {
                throw fail("bad value")
            }
            return .number(number)
        }
    }

    mutating func parseString() throws(BerthError) -> String {
        try expect("\"")
        var out: [UInt8] = []
        while offset < bytes.count {
            let byte = bytes[offset]
            offset += 1
            switch byte {
            case UInt8(ascii: "\""):
                return String(decoding: out, as: UTF8.self)
            case UInt8(ascii: "\\"):
                guard offset < bytes.count else { throw fail("unterminated escape") }
                let escape = bytes[offset]
                offset += 1
                switch escape {
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "u"):
                    var scalar = try hex4()
                    if (0xD800..<0xDC00).contains(scalar), offset + 1 < bytes.count,
                       bytes[offset] == UInt8(ascii: "\\"), bytes[offset + 1] == UInt8(ascii: "u") {
                        offset += 2
                        let low = try hex4()
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low &- 0xDC00)
                    }
                    out.append(contentsOf: Array(String(Unicode.Scalar(scalar).map(Character.init) ?? "\u{FFFD}").utf8))
                default: out.append(escape)
                }
            default:
                out.append(byte)
            }
        }
        throw fail("unterminated string")
    }

    mutating func hex4() throws(BerthError) -> UInt32 {
        guard offset + 4 <= bytes.count,
              let value = UInt32(String(decoding: bytes[offset..<offset + 4], as: UTF8.self), radix: 16) else {
            throw fail("bad \\u escape")
        }
        offset += 4
        return value
    }
}
