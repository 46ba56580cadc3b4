import BerthCore

/// One tar entry after its extension headers (pax `x`, GNU `L`/`K`) have been folded in.
struct TarEntry: Sendable {
    enum Kind: Sendable, Equatable {
        case regular, hardlink, symlink, characterDevice, blockDevice, directory, fifo
    }

    /// The name as stored (not normalized): bytes, since tar names need not be UTF-8.
    var name: [UInt8]
    var kind: Kind
    /// Permission bits including setuid, setgid and sticky (`0o7777`).
    var mode: UInt32 = 0o644
    var uid: Int = 0
    var gid: Int = 0
    /// Bytes of data that follow the header (zero for header-only kinds).
    var size: Int64 = 0
    var mtime: Timestamp = .init(seconds: 0, nanoseconds: 0)
    var atime: Timestamp?
    var linkName: [UInt8] = []
    var deviceMajor: UInt32 = 0
    var deviceMinor: UInt32 = 0
    /// `SCHILY.xattr.*` records, in archive order.
    var xattrs: [(name: String, value: [UInt8])] = []

    var displayName: String { display(name) }

    /// A seconds-and-nanoseconds time as tar carries it.
    struct Timestamp: Sendable, Equatable {
        var seconds: Int64
        var nanoseconds: Int
    }
}

/// Limits that keep a hostile archive from making the reader allocate without bound.
enum TarLimits {
    /// Largest pax extended header or GNU long name/link accepted.
    static let maxExtensionSize: Int64 = 1 << 20
    /// Longest entry path (Linux PATH_MAX).
    static let maxPathLength = 4096
}

/// The fixed 512-byte ustar/GNU header layout.
enum TarHeaderLayout {
    static let blockSize = 512
    static let name = 0..<100
    static let mode = 100..<108
    static let uid = 108..<116
    static let gid = 116..<124
    static let size = 124..<136
    static let mtime = 136..<148
    static let checksum = 148..<156
    static let typeflag = 156
    static let linkName = 157..<257
    static let magic = 257..<263
    static let version = 263..<265
    static let uname = 265..<297
    static let gname = 297..<329
    static let devMajor = 329..<337
    static let devMinor = 337..<345
    static let prefix = 345..<500
    static let gnuAtime = 345..<357
}

/// What a raw header block says, before extension records are applied.
struct RawTarHeader {
    var typeflag: UInt8
    var name: [UInt8]
    var linkName: [UInt8]
    var mode: Int64
    var uid: Int64
    var gid: Int64
    var size: Int64
    var mtime: Int64
    var devMajor: Int64
    var devMinor: Int64
    var isGNU: Bool

    /// Parses one header block. Returns nil for an all-zero block (end of archive).
    /// Throws `dataLoss` for a block whose checksum does not match (not a tar header: corrupt or not a tar),
    /// `invalidArgument` for unparsable numeric fields.
    static func parse(_ block: UnsafeRawBufferPointer) throws(BerthError) -> RawTarHeader? {
        precondition(block.count >= TarHeaderLayout.blockSize)
        var unsignedSum = 0
        var signedSum = 0
        var allZero = true
        for index in 0..<TarHeaderLayout.blockSize {
            var byte = block[index]
            if byte != 0 { allZero = false }
            if TarHeaderLayout.checksum.contains(index) { byte = 0x20 }
            unsignedSum += Int(byte)
            signedSum += Int(Int8(bitPattern: byte))
        }
        if allZero { return nil }
        let field = { (range: Range<Int>) in UnsafeRawBufferPointer(rebasing: block[range]) }
        guard let stored = try? parseNumber(field(TarHeaderLayout.checksum)),
              stored == Int64(unsignedSum) || stored == Int64(signedSum) else {
            throw BerthError(.dataLoss, "layer tar: invalid header checksum (corrupt or not a tar archive)")
        }
        // "ustar\0" (POSIX) or "ustar  \0" (GNU), compared in place.
        let isUstarPrefix = block[257] == 0x75 && block[258] == 0x73 && block[259] == 0x74 && block[260] == 0x61
            && block[261] == 0x72
        let isUstar = isUstarPrefix && block[262] == 0
        let isGNU = isUstarPrefix && block[262] == 0x20 && block[263] == 0x20 && block[264] == 0
        var name = cString(field(TarHeaderLayout.name))
        if isUstar {
            let prefix = cString(field(TarHeaderLayout.prefix))
            if !prefix.isEmpty { name = prefix + [UInt8(ascii: "/")] + name }
        }
        let label = display(name)
        func number(_ range: Range<Int>, _ what: String) throws(BerthError) -> Int64 {
            do { return try parseNumber(field(range)) } catch {
                throw .invalidArgument("layer entry \(quoted(label)): invalid \(what) field in tar header")
            }
        }
        let typeflag = block[TarHeaderLayout.typeflag]
        let hasDevice = isUstar || isGNU
        return RawTarHeader(
            typeflag: typeflag,
            name: name,
            linkName: cString(field(TarHeaderLayout.linkName)),
            mode: try number(TarHeaderLayout.mode, "mode"),
            uid: try number(TarHeaderLayout.uid, "uid"),
            gid: try number(TarHeaderLayout.gid, "gid"),
            size: try number(TarHeaderLayout.size, "size"),
            mtime: try number(TarHeaderLayout.mtime, "mtime"),
            devMajor: hasDevice ? try number(TarHeaderLayout.devMajor, "devmajor") : 0,
            devMinor: hasDevice ? try number(TarHeaderLayout.devMinor, "devminor") : 0,
            isGNU: isGNU)
    }
}

struct TarNumberError: Error {}

/// Bytes of a NUL-terminated field.
func cString(_ field: UnsafeRawBufferPointer) -> [UInt8] {
    var end = 0
    while end < field.count && field[end] != 0 { end += 1 }
    return Array(field[0..<end])
}

/// Parses a numeric header field: octal (padded with spaces or NULs), or GNU base-256 when the top bit of the
/// first byte is set (a leading 0xff marks a negative number, returned as such).
func parseNumber(_ field: UnsafeRawBufferPointer) throws(TarNumberError) -> Int64 {
    guard let first = field.first else { return 0 }
    if first & 0x80 != 0 {
        let negative = first & 0x40 != 0
        var value: UInt64 = negative ? ~0 : 0
        for (index, byte) in field.enumerated() {
            var b = byte
            if index == 0 { b = negative ? (byte | 0x80) : (byte & 0x7F) }
            guard value >> 56 == (negative ? 0xFF : 0) else { throw TarNumberError() }
            value = (value << 8) | UInt64(b)
        }
        let signed = Int64(bitPattern: value)
        guard negative == (signed < 0) else { throw TarNumberError() }
        return signed
    }
    var index = 0
    while index < field.count && (field[index] == 0x20 || field[index] == 0) { index += 1 }
    var value: Int64 = 0
    var sawDigit = false
    while index < field.count {
        let byte = field[index]
        if byte == 0x20 || byte == 0 { break }
        guard byte >= 0x30 && byte <= 0x37 else { throw TarNumberError() }
        guard value <= (Int64.max >> 3) else { throw TarNumberError() }
        value = value << 3 | Int64(byte - 0x30)
        sawDigit = true
        index += 1
    }
    while index < field.count {
        guard field[index] == 0x20 || field[index] == 0 else { throw TarNumberError() }
        index += 1
    }
    _ = sawDigit
    return value
}

/// The records of a pax extended header, as raw key/value bytes, in order.
/// Throws `invalidArgument` (naming `entry`) for a malformed record.
func parsePaxRecords(_ data: [UInt8], entry: String) throws(BerthError) -> [(key: String, value: [UInt8])] {
    var records: [(key: String, value: [UInt8])] = []
    var index = 0
    let malformed = BerthError.invalidArgument("layer entry \(quoted(entry)): malformed pax extended header")
    while index < data.count {
        // Trailing NUL padding is tolerated.
        if data[index] == 0 { break }
        var length = 0
        var cursor = index
        while cursor < data.count, data[cursor] >= 0x30, data[cursor] <= 0x39 {
            length = length * 10 + Int(data[cursor] - 0x30)
            guard length <= data.count else { throw malformed }
            cursor += 1
        }
        guard cursor < data.count, data[cursor] == 0x20, cursor > index, length > cursor - index + 1,
              index + length <= data.count, data[index + length - 1] == 0x0A else { throw malformed }
        let record = data[(cursor + 1)..<(index + length - 1)]
        guard let equals = record.firstIndex(of: UInt8(ascii: "=")) else { throw malformed }
        let key = String(decoding: record[record.startIndex..<equals], as: UTF8.self)
        records.append((key, Array(record[(equals + 1)...])))
        index += length
    }
    return records
}

/// Parses a pax time such as `1700000000.123456789` or `-1.5`.
func parsePaxTime(_ value: [UInt8]) -> TarEntry.Timestamp? {
    var text = value[...]
    var negative = false
    if text.first == UInt8(ascii: "-") { negative = true; text = text.dropFirst() }
    let dot = text.firstIndex(of: UInt8(ascii: "."))
    let wholePart = text[text.startIndex..<(dot ?? text.endIndex)]
    guard !wholePart.isEmpty, wholePart.count <= 18, wholePart.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
    var seconds: Int64 = 0
    for byte in wholePart { seconds = seconds * 10 + Int64(byte - 0x30) }
    var nanoseconds = 0
    if let dot {
        let fraction = text[text.index(after: dot)...]
        guard fraction.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        var scale = 100_000_000
        for byte in fraction.prefix(9) {
            nanoseconds += Int(byte - 0x30) * scale
            scale /= 10
        }
    }
    if negative {
        if nanoseconds > 0 { return .init(seconds: -seconds - 1, nanoseconds: 1_000_000_000 - nanoseconds) }
        return .init(seconds: -seconds, nanoseconds: 0)
    }
    return .init(seconds: seconds, nanoseconds: nanoseconds)
}

/// Parses a pax decimal integer.
func parsePaxInteger(_ value: [UInt8]) -> Int64? {
    var text = value[...]
    var negative = false
    if text.first == UInt8(ascii: "-") { negative = true; text = text.dropFirst() }
    guard !text.isEmpty, text.count <= 18, text.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
    var result: Int64 = 0
    for byte in text { result = result * 10 + Int64(byte - 0x30) }
    return negative ? -result : result
}
