import BerthCore

/// Writes tar entries in POSIX pax format: a ustar header, preceded by a pax extended header when a field does
/// not fit (long names and link targets, large ids and sizes, sub-second mtimes, xattrs as `SCHILY.xattr.*`).
/// Output is deterministic: the same entries give the same bytes.
final class TarWriter {
    private let output: LayerOutput
    private static let zeros = [UInt8](repeating: 0, count: TarHeaderLayout.blockSize * 2)

    init(output: LayerOutput) { self.output = output }

    /// Writes the header(s) of `entry`; for a regular file the caller then writes exactly `entry.size` bytes
    /// with ``writeData(_:)`` and calls ``endData(size:)``.
    func writeHeader(_ entry: TarEntry) throws(BerthError) {
        var records: [(String, [UInt8])] = []
        var name = entry.name
        var prefix: [UInt8] = []
        if name.count > 100 {
            if let split = Self.splitForUstar(name) {
                prefix = split.prefix
                name = split.name
            } else {
                records.append(("path", entry.name))
                name = Array(entry.name.prefix(100))
            }
        }
        var linkName = entry.linkName
        if linkName.count > 100 {
            records.append(("linkpath", linkName))
            linkName = Array(linkName.prefix(100))
        }
        let maxOctal7: Int64 = 0o7777777
        let maxOctal11: Int64 = 0o77777777777
        var uid = Int64(entry.uid), gid = Int64(entry.gid), size = entry.size
        if uid > maxOctal7 { records.append(("uid", Array(String(uid).utf8))); uid = 0 }
        if gid > maxOctal7 { records.append(("gid", Array(String(gid).utf8))); gid = 0 }
        if size > maxOctal11 { records.append(("size", Array(String(size).utf8))); size = 0 }
        var mtime = entry.mtime.seconds
        if entry.mtime.nanoseconds != 0 || mtime < 0 || mtime > maxOctal11 {
            records.append(("mtime", Array(Self.formatTime(entry.mtime).utf8)))
            mtime = min(max(mtime, 0), maxOctal11)
        }
        for (key, value) in entry.xattrs.sorted(by: { $0.name < $1.name }) {
            records.append(("SCHILY.xattr." + key, value))
        }
        if !records.isEmpty {
            var data: [UInt8] = []
            for (key, value) in records { data += Self.paxRecord(key, value) }
            let base = entry.name.split(separator: EntryPath.slash).last.map(Array.init) ?? []
            var paxName = Array("PaxHeaders.0/".utf8) + base
            if paxName.count > 100 { paxName = Array(paxName.prefix(100)) }
            try writeBlock(name: paxName, prefix: [], mode: 0o644, uid: 0, gid: 0, size: Int64(data.count), mtime: 0,
                           typeflag: UInt8(ascii: "x"), linkName: [], major: 0, minor: 0)
            try output.write(data)
            try endData(size: Int64(data.count))
        }
        let typeflag: UInt8 = switch entry.kind {
        case .regular: UInt8(ascii: "0")
        case .hardlink: UInt8(ascii: "1")
        case .symlink: UInt8(ascii: "2")
        case .characterDevice: UInt8(ascii: "3")
        case .blockDevice: UInt8(ascii: "4")
        case .directory: UInt8(ascii: "5")
        case .fifo: UInt8(ascii: "6")
        }
        try writeBlock(name: name, prefix: prefix, mode: Int64(entry.mode & 0o7777), uid: uid, gid: gid,
                       size: entry.kind == .regular ? size : 0, mtime: mtime, typeflag: typeflag, linkName: linkName,
                       major: Int64(entry.deviceMajor), minor: Int64(entry.deviceMinor))
    }

    func writeData(_ bytes: UnsafeRawBufferPointer) throws(BerthError) { try output.write(bytes) }

    /// Pads the data of an entry of `size` bytes to the block size.
    func endData(size: Int64) throws(BerthError) {
        let remainder = Int(size % Int64(TarHeaderLayout.blockSize))
        if remainder != 0 {
            try output.write(Array(Self.zeros[0..<(TarHeaderLayout.blockSize - remainder)]))
        }
    }

    /// Writes the end-of-archive marker (two zero blocks).
    func finish() throws(BerthError) { try output.write(Self.zeros) }

    private func writeBlock(name: [UInt8], prefix: [UInt8], mode: Int64, uid: Int64, gid: Int64, size: Int64,
                            mtime: Int64, typeflag: UInt8, linkName: [UInt8], major: Int64, minor: Int64) throws(BerthError) {
        var block = [UInt8](repeating: 0, count: TarHeaderLayout.blockSize)
        func put(_ bytes: some Collection<UInt8>, _ range: Range<Int>) {
            for (offset, byte) in bytes.prefix(range.count).enumerated() { block[range.lowerBound + offset] = byte }
        }
        func octal(_ value: Int64, _ range: Range<Int>) {
            let digits = String(value, radix: 8)
            let padded = String(repeating: "0", count: max(0, range.count - 1 - digits.count)) + digits
            put(Array(padded.utf8), range.lowerBound..<(range.upperBound - 1))
        }
        put(name, TarHeaderLayout.name)
        octal(mode, TarHeaderLayout.mode)
        octal(uid, TarHeaderLayout.uid)
        octal(gid, TarHeaderLayout.gid)
        octal(size, TarHeaderLayout.size)
        octal(mtime, TarHeaderLayout.mtime)
        block[TarHeaderLayout.typeflag] = typeflag
        put(linkName, TarHeaderLayout.linkName)
        put(Array("ustar\0".utf8), TarHeaderLayout.magic)
        put(Array("00".utf8), TarHeaderLayout.version)
        octal(major, TarHeaderLayout.devMajor)
        octal(minor, TarHeaderLayout.devMinor)
        put(prefix, TarHeaderLayout.prefix)
        for index in TarHeaderLayout.checksum { block[index] = 0x20 }
        let sum = block.reduce(0) { $0 + Int($1) }
        let digits = String(sum, radix: 8)
        put(Array((String(repeating: "0", count: max(0, 6 - digits.count)) + digits).utf8), 148..<154)
        block[154] = 0
        block[155] = 0x20
        try output.write(block)
    }

    /// Splits a name of up to 255 bytes at a `/` into a ustar prefix (≤ 155) and name (≤ 100).
    private static func splitForUstar(_ name: [UInt8]) -> (prefix: [UInt8], name: [UInt8])? {
        guard name.count <= 256 else { return nil }
        for index in stride(from: min(name.count - 1, 155), through: 1, by: -1) where name[index] == EntryPath.slash {
            let rest = name.count - index - 1
            if rest == 0 || rest > 100 { continue }
            return (Array(name[..<index]), Array(name[(index + 1)...]))
        }
        return nil
    }

    static func formatTime(_ time: TarEntry.Timestamp) -> String {
        guard time.nanoseconds != 0 else { return String(time.seconds) }
        var seconds = time.seconds
        var nanos = time.nanoseconds
        var sign = ""
        if seconds < 0 {
            sign = "-"
            seconds = -seconds - 1
            nanos = 1_000_000_000 - nanos
        }
        var fraction = String(nanos)
        fraction = String(repeating: "0", count: 9 - fraction.count) + fraction
        while fraction.hasSuffix("0") { fraction.removeLast() }
        return "\(sign)\(seconds).\(fraction)"
    }

    static func paxRecord(_ key: String, _ value: [UInt8]) -> [UInt8] {
        let body = Array(key.utf8).count + value.count + 3
        var length = body + String(body).count
        if String(length).count != String(body).count { length = body + String(length).count }
        return Array("\(length) \(key)=".utf8) + value + [0x0A]
    }
}
