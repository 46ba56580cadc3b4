/// A content digest such as `sha256:4f5c…`, validated when it is made.
///
/// Parse once at the edge with ``init(parsing:)``; everything past the edge holds a `Digest`,
/// never a bare string.
public struct Digest: Hashable, Sendable, Comparable, CustomStringConvertible, Codable {
    public let algorithm: DigestAlgorithm
    /// Lowercase hex of exactly the algorithm's length.
    public let encoded: String

    /// Throws `invalidArgument` for an unknown algorithm, a wrong length or non-hex characters.
    public init(parsing text: String) throws(BerthError) {
        guard let colon = text.firstIndex(of: ":") else {
            throw .invalidArgument("digest \(quoted(text)): invalid checksum digest format")
        }
        let name = String(text[..<colon])
        let hex = String(text[text.index(after: colon)...])
        guard let algorithm = DigestAlgorithm(rawValue: name) else {
            if name.isEmpty || !name.allSatisfy({ $0.isLetter || $0.isNumber || "+._-".contains($0) }) {
                throw .invalidArgument("digest \(quoted(text)): invalid checksum digest format")
            }
            throw .invalidArgument("digest \(quoted(text)): unsupported digest algorithm")
        }
        guard hex.utf8.count == algorithm.hexLength else {
            throw .invalidArgument("digest \(quoted(text)): invalid checksum digest length")
        }
        guard hex.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }) else {
            throw .invalidArgument("digest \(quoted(text)): invalid checksum digest format")
        }
        self.algorithm = algorithm
        self.encoded = hex
    }

    /// Makes a digest from bytes a hasher produced.
    public init(algorithm: DigestAlgorithm, bytes: some Sequence<UInt8>) {
        self.algorithm = algorithm
        self.encoded = hexString(bytes)
    }

    public var description: String { "\(algorithm.rawValue):\(encoded)" }

    public static func < (lhs: Digest, rhs: Digest) -> Bool { lhs.description < rhs.description }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        do { try self.init(parsing: text) } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: error.message))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

public enum DigestAlgorithm: String, Sendable, Codable, CaseIterable {
    case sha256
    case sha384
    case sha512

    public var hexLength: Int {
        switch self {
        case .sha256: 64
        case .sha384: 96
        case .sha512: 128
        }
    }
}

private let hexDigits = Array("0123456789abcdef".utf8)

func hexString(_ bytes: some Sequence<UInt8>) -> String {
    var out: [UInt8] = []
    out.reserveCapacity(128)
    for byte in bytes {
        out.append(hexDigits[Int(byte >> 4)])
        out.append(hexDigits[Int(byte & 0xF)])
    }
    return String(decoding: out, as: UTF8.self)
}

/// Quotes a user-supplied value for an error message.
public func quoted(_ text: String) -> String {
    var out = "\""
    for character in text {
        if character == "\"" || character == "\\" { out.append("\\") }
        out.append(character)
    }
    out.append("\"")
    return out
}
