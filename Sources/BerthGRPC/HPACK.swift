/// HPACK (RFC 7541): the header compression of HTTP/2.
///
/// The server decodes every header block its clients send, so the decoder is complete: indexed
/// fields, literals with and without indexing, the dynamic table and its size updates, Huffman
/// strings. It encodes only what a gRPC server sends back (a status, a content type, trailers,
/// the handler's metadata), always as literals that do not enter the client's dynamic table, so
/// the encoder keeps no state.
enum HPACK {
    /// A malformed header block. The connection cannot go on: the dynamic tables of the two ends
    /// may no longer agree (RFC 7541 §2.3.3, COMPRESSION_ERROR).
    struct DecodingError: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    /// The static table (RFC 7541 Appendix A), entries 1 to 61.
    static let staticTable: [(name: String, value: String)] = [
        (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"),
        (":path", "/index.html"), (":scheme", "http"), (":scheme", "https"), (":status", "200"),
        (":status", "204"), (":status", "206"), (":status", "304"), (":status", "400"),
        (":status", "404"), (":status", "500"), ("accept-charset", ""), ("accept-encoding", "gzip, deflate"),
        ("accept-language", ""), ("accept-ranges", ""), ("accept", ""), ("access-control-allow-origin", ""),
        ("age", ""), ("allow", ""), ("authorization", ""), ("cache-control", ""),
        ("content-disposition", ""), ("content-encoding", ""), ("content-language", ""), ("content-length", ""),
        ("content-location", ""), ("content-range", ""), ("content-type", ""), ("cookie", ""),
        ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""),
        ("from", ""), ("host", ""), ("if-match", ""), ("if-modified-since", ""),
        ("if-none-match", ""), ("if-range", ""), ("if-unmodified-since", ""), ("last-modified", ""),
        ("link", ""), ("location", ""), ("max-forwards", ""), ("proxy-authenticate", ""),
        ("proxy-authorization", ""), ("range", ""), ("referer", ""), ("refresh", ""),
        ("retry-after", ""), ("server", ""), ("set-cookie", ""), ("strict-transport-security", ""),
        ("transfer-encoding", ""), ("user-agent", ""), ("vary", ""), ("via", ""),
        ("www-authenticate", ""),
    ]

    // MARK: Decoding

    /// Decodes header blocks of one connection, keeping its dynamic table between them.
    struct Decoder {
        /// Newest first: entry 62 of the index space is `dynamic[0]`.
        private var dynamic: [(name: String, value: String)] = []
        private var dynamicSize = 0
        /// The size limit the encoder last set, at most `settingsLimit`.
        private var maxSize: Int
        /// SETTINGS_HEADER_TABLE_SIZE as this end advertised it (the default, 4096, by berthd).
        let settingsLimit: Int

        init(settingsLimit: Int = 4096) {
            self.settingsLimit = settingsLimit
            self.maxSize = settingsLimit
        }

        /// Decodes one complete header block (HEADERS plus its CONTINUATIONs) into fields in
        /// order. Names are checked to be lowercase, as HTTP/2 requires.
        mutating func decode(_ block: [UInt8]) throws(DecodingError) -> [(name: String, value: String)] {
            var fields: [(name: String, value: String)] = []
            var reader = Reader(bytes: block)
            var fieldSeen = false
            while !reader.atEnd {
                let first = reader.peek()
                if first & 0x80 != 0 {
                    let index = try reader.integer(prefixBits: 7)
                    fields.append(try entry(index))
                    fieldSeen = true
                } else if first & 0xC0 == 0x40 {
                    let field = try literal(&reader, prefixBits: 6)
                    insert(field)
                    fields.append(field)
                    fieldSeen = true
                } else if first & 0xE0 == 0x20 {
                    // A size update must come before the block's first field (§4.2).
                    guard !fieldSeen else { throw DecodingError("dynamic table size update after a header field") }
                    let size = try reader.integer(prefixBits: 5)
                    guard size <= settingsLimit else {
                        throw DecodingError("dynamic table size update to \(size), above the limit \(settingsLimit)")
                    }
                    maxSize = size
                    evict(toFit: 0)
                } else {
                    // 0000xxxx without indexing, 0001xxxx never indexed: both leave the table alone.
                    fields.append(try literal(&reader, prefixBits: 4))
                    fieldSeen = true
                }
            }
            return fields
        }

        private func entry(_ index: Int) throws(DecodingError) -> (name: String, value: String) {
            if index >= 1 && index <= HPACK.staticTable.count { return HPACK.staticTable[index - 1] }
            let dynamicIndex = index - HPACK.staticTable.count - 1
            guard index != 0, dynamicIndex < dynamic.count else {
                throw DecodingError("header index \(index) is not in the tables")
            }
            return dynamic[dynamicIndex]
        }

        private func literal(_ reader: inout Reader, prefixBits: Int) throws(DecodingError) -> (name: String, value: String) {
            let nameIndex = try reader.integer(prefixBits: prefixBits)
            let name: String
            if nameIndex == 0 {
                name = try reader.string()
                guard !name.utf8.contains(where: { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") }) else {
                    throw DecodingError("header name \"\(name)\" is not lowercase")
                }
            } else {
                name = try entry(nameIndex).name
            }
            return (name, try reader.string())
        }

        private mutating func insert(_ field: (name: String, value: String)) {
            let size = Self.size(of: field)
            evict(toFit: size)
            // An entry larger than the whole table empties it and is not added (§4.4).
            guard size <= maxSize else { return }
            dynamic.insert(field, at: 0)
            dynamicSize += size
        }

        private mutating func evict(toFit incoming: Int) {
            while !dynamic.isEmpty && dynamicSize + incoming > maxSize {
                dynamicSize -= Self.size(of: dynamic.removeLast())
            }
        }

        private static func size(of field: (name: String, value: String)) -> Int {
            field.name.utf8.count + field.value.utf8.count + 32
        }
    }

    /// Reads HPACK's primitive types (§5) from a header block.
    private struct Reader {
        let bytes: [UInt8]
        var offset = 0

        var atEnd: Bool { offset >= bytes.count }

        func peek() -> UInt8 { bytes[offset] }

        mutating func byte() throws(DecodingError) -> UInt8 {
            guard offset < bytes.count else { throw DecodingError("header block ends inside a field") }
            defer { offset += 1 }
            return bytes[offset]
        }

        /// An integer with an N-bit prefix (§5.1), at most 2^28 so nothing overflows.
        mutating func integer(prefixBits: Int) throws(DecodingError) -> Int {
            let mask = (1 << prefixBits) - 1
            var value = Int(try byte()) & mask
            guard value == mask else { return value }
            var shift = 0
            while true {
                let next = try byte()
                value += Int(next & 0x7F) << shift
                shift += 7
                guard value < 1 << 28 else { throw DecodingError("header integer too large") }
                if next & 0x80 == 0 { return value }
            }
        }

        /// A string literal (§5.2), Huffman-coded or raw.
        mutating func string() throws(DecodingError) -> String {
            guard offset < bytes.count else { throw DecodingError("header block ends inside a field") }
            let huffman = bytes[offset] & 0x80 != 0
            let length = try integer(prefixBits: 7)
            guard length <= bytes.count - offset else { throw DecodingError("header string runs past the block") }
            let raw = bytes[offset..<offset + length]
            offset += length
            if huffman { return String(decoding: try Huffman.decode(raw), as: UTF8.self) }
            return String(decoding: raw, as: UTF8.self)
        }
    }

    // MARK: Encoding

    /// Appends `name: value` as a literal header field without indexing (§6.2.2), with a raw
    /// (not Huffman-coded) name and value. `nameIndex` names a static-table entry whose name to
    /// reuse.
    static func appendLiteral(name: String, value: String, nameIndex: Int? = nil, to out: inout [UInt8]) {
        if let nameIndex {
            appendInteger(nameIndex, prefixBits: 4, flags: 0x00, to: &out)
        } else {
            out.append(0x00)
            appendString(name, to: &out)
        }
        appendString(value, to: &out)
    }

    /// Appends a fully indexed field (§6.1), e.g. 8 for `:status: 200`.
    static func appendIndexed(_ index: Int, to out: inout [UInt8]) {
        appendInteger(index, prefixBits: 7, flags: 0x80, to: &out)
    }

    static func appendInteger(_ value: Int, prefixBits: Int, flags: UInt8, to out: inout [UInt8]) {
        let mask = (1 << prefixBits) - 1
        if value < mask {
            out.append(flags | UInt8(value))
            return
        }
        out.append(flags | UInt8(mask))
        var rest = value - mask
        while rest >= 0x80 {
            out.append(UInt8(rest & 0x7F) | 0x80)
            rest >>= 7
        }
        out.append(UInt8(rest))
    }

    private static func appendString(_ string: String, to out: inout [UInt8]) {
        appendInteger(string.utf8.count, prefixBits: 7, flags: 0x00, to: &out)
        out.append(contentsOf: string.utf8)
    }
}

/// The Huffman code of HPACK (RFC 7541 Appendix B), decoding only.
///
/// The code is canonical: codes of one length are consecutive, and shorter codes come first, in
/// symbol order. The bit length of each of the 257 symbols (256 is EOS) therefore defines it.
enum Huffman {
    /// Code length in bits of symbols 0...256 (RFC 7541 Appendix B).
    static let lengths: [UInt8] = [
        13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
        6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
        13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
        15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
        20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
        22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
        26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
        20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
        30,
    ]

    /// The canonical code's decoding tables: for each length, the first code of that length, how
    /// many codes have it, and where its symbols start in `symbols`.
    private struct Tables {
        var firstCode = [UInt32](repeating: 0, count: 31)
        var count = [UInt32](repeating: 0, count: 31)
        var offset = [Int](repeating: 0, count: 31)
        var symbols: [UInt16] = []
    }

    private static let tables: Tables = {
        var tables = Tables()
        for length in 1...30 {
            tables.offset[length] = tables.symbols.count
            for symbol in lengths.indices where lengths[symbol] == length {
                tables.symbols.append(UInt16(symbol))
                tables.count[length] += 1
            }
        }
        var code: UInt32 = 0
        for length in 1...30 {
            tables.firstCode[length] = code
            code = (code + tables.count[length]) << 1
        }
        return tables
    }()

    /// The code of `symbol`, for tests and for anyone encoding: (code, bit length).
    static func code(of symbol: Int) -> (code: UInt32, length: Int) {
        let length = Int(lengths[symbol])
        let rank = tables.symbols[tables.offset[length]...].firstIndex(of: UInt16(symbol))! - tables.offset[length]
        return (tables.firstCode[length] + UInt32(rank), length)
    }

    /// Decodes a Huffman-coded string. Padding must be at most 7 bits, all ones (§5.2), and EOS
    /// must not appear.
    static func decode(_ input: ArraySlice<UInt8>) throws(HPACK.DecodingError) -> [UInt8] {
        let tables = Self.tables
        var out: [UInt8] = []
        out.reserveCapacity(input.count * 8 / 5)
        var code: UInt32 = 0
        var length = 0
        var allOnes = true
        for byte in input {
            for shift in stride(from: 7, through: 0, by: -1) {
                let bit = UInt32(byte >> UInt8(shift)) & 1
                code = code << 1 | bit
                length += 1
                allOnes = allOnes && bit == 1
                guard length <= 30 else { throw HPACK.DecodingError("invalid Huffman code") }
                let rank = code &- tables.firstCode[length]
                if rank < tables.count[length] {
                    let symbol = tables.symbols[tables.offset[length] + Int(rank)]
                    guard symbol != 256 else { throw HPACK.DecodingError("EOS inside a Huffman string") }
                    out.append(UInt8(symbol))
                    code = 0
                    length = 0
                    allOnes = true
                }
            }
        }
        guard length <= 7, allOnes else { throw HPACK.DecodingError("invalid Huffman padding") }
        return out
    }
}
