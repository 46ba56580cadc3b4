@testable import BerthGRPC
import Testing

/// HPACK against the examples of RFC 7541 Appendix C, and the pieces the server writes.
@Suite struct HPACKTests {
    static func bytes(_ hex: String) -> [UInt8] {
        let digits = Array(hex.utf8)
        return stride(from: 0, to: digits.count, by: 2).map { UInt8(String(decoding: digits[$0..<$0 + 2], as: UTF8.self), radix: 16)! }
    }

    @Test func canonicalCodeMatchesTheRFCTable() {
        #expect(Huffman.code(of: Int(UInt8(ascii: "0"))) == (0x0, 5))
        #expect(Huffman.code(of: Int(UInt8(ascii: "a"))) == (0x3, 5))
        #expect(Huffman.code(of: Int(UInt8(ascii: " "))) == (0x14, 6))
        #expect(Huffman.code(of: Int(UInt8(ascii: "A"))) == (0x21, 6))
        #expect(Huffman.code(of: 0) == (0x1ff8, 13))
        #expect(Huffman.code(of: 256) == (0x3fff_ffff, 30))
    }

    /// C.4: three requests with Huffman-coded strings, sharing one dynamic table.
    @Test func requestsWithHuffmanCodingAndTheDynamicTable() throws {
        var decoder = HPACK.Decoder()
        let first = try decoder.decode(Self.bytes("828684418cf1e3c2e5f23a6ba0ab90f4ff"))
        #expect(first.map(\.name) == [":method", ":scheme", ":path", ":authority"])
        #expect(first.map(\.value) == ["GET", "http", "/", "www.example.com"])
        let second = try decoder.decode(Self.bytes("828684be5886a8eb10649cbf"))
        #expect(second.last! == ("cache-control", "no-cache"))
        #expect(second[3] == (":authority", "www.example.com"))
        let third = try decoder.decode(Self.bytes("828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf"))
        #expect(third.map(\.value) == ["GET", "https", "/index.html", "www.example.com", "custom-value"])
        #expect(third.last!.name == "custom-key")
    }

    /// C.3: the same requests without Huffman coding.
    @Test func requestsWithRawStrings() throws {
        var decoder = HPACK.Decoder()
        let first = try decoder.decode(Self.bytes("828684410f7777772e6578616d706c652e636f6d"))
        #expect(first.last! == (":authority", "www.example.com"))
        let second = try decoder.decode(Self.bytes("828684be58086e6f2d6361636865"))
        #expect(second.last! == ("cache-control", "no-cache"))
    }

    @Test func malformedBlocksAreErrors() {
        var decoder = HPACK.Decoder()
        #expect(throws: HPACK.DecodingError.self) { try decoder.decode([0xC0]) }  // index 64: empty dynamic table
        #expect(throws: HPACK.DecodingError.self) { try decoder.decode([0x41, 0x05, 0x61]) }  // string past the end
        #expect(throws: HPACK.DecodingError.self) { try decoder.decode([0x3F, 0xE2, 0x1F]) }  // size update to 4097
        #expect(throws: HPACK.DecodingError.self) { try decoder.decode([0x40, 0x01, 0x41, 0x00]) }  // uppercase name
        // Huffman padding longer than 7 bits ("a" then 8 one-bits).
        #expect(throws: HPACK.DecodingError.self) { try Huffman.decode([0x1F, 0xFF][...]) }
    }

    @Test func encodedFieldsDecode() throws {
        var block: [UInt8] = []
        HPACK.appendIndexed(8, to: &block)
        HPACK.appendLiteral(name: "content-type", value: "application/grpc", nameIndex: 31, to: &block)
        HPACK.appendLiteral(name: "grpc-message", value: String(repeating: "x", count: 300), to: &block)
        var decoder = HPACK.Decoder()
        let fields = try decoder.decode(block)
        #expect(fields.map(\.name) == [":status", "content-type", "grpc-message"])
        #expect(fields[1].value == "application/grpc")
        #expect(fields[2].value.count == 300)
    }

    @Test func base64AndPercentEncoding() {
        for length in 0..<8 {
            let bytes = (0..<length).map { UInt8($0 * 37 & 0xFF) }
            #expect(Base64.decode(Base64.encode(bytes)) == bytes)
        }
        #expect(Base64.encode(Array("hi!".utf8)) == "aGkh")
        #expect(Base64.decode("aGk") == Array("hi".utf8))
        #expect(Base64.decode("a$==") == nil)
        #expect(HTTP2Connection.percentEncoded("50% done\nnaïve") == "50%25 done%0Ana%C3%AFve")
    }
}
