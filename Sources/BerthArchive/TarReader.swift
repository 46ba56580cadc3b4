import BerthCore

/// A source of consecutive byte chunks: the decompression pipeline, or an in-memory buffer in tests.
protocol ChunkSource: AnyObject {
    /// The next chunk, valid until the following call; nil at the end. Throws `dataLoss` for corrupt input.
    func next() throws(BerthError) -> UnsafeRawBufferPointer?
}

extension LayerPipeline: ChunkSource {}

/// Reads tar entries sequentially from a ``ChunkSource``: ustar, POSIX pax (local records; global headers
/// ignored), GNU long names and links (`L`/`K`) and GNU base-256 numbers. Entry data is handed out in place,
/// straight from the source's buffers, through ``readData(_:)``.
///
/// Errors: `invalidArgument` naming the entry for malformed or oversized headers and unsupported entry types
/// (sparse files among them); `dataLoss` for a truncated stream or a header that fails its checksum.
final class TarReader {
    private let source: any ChunkSource
    private var chunk = UnsafeRawBufferPointer(start: nil, count: 0)
    private var position = 0
    /// Unread data bytes of the current entry, then the padding to the next block.
    private var remainingData: Int64 = 0
    private var padding = 0
    private let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: TarHeaderLayout.blockSize, alignment: 16)
    /// The entry whose data is being read, for messages.
    private var currentName = ""

    init(source: any ChunkSource) { self.source = source }

    deinit { scratch.deallocate() }

    // MARK: Stream primitives

    /// Makes sure unread bytes are in `chunk`; false at the end of the stream.
    @inline(__always)
    private func fill() throws(BerthError) -> Bool {
        while position == chunk.count {
            guard let next = try source.next() else { return false }
            chunk = next
            position = 0
        }
        return true
    }

    private func truncated(_ what: String) -> BerthError {
        BerthError(.dataLoss, "layer tar: unexpected end of archive \(what)")
    }

    /// The next 512-byte block, or nil if the stream ends exactly here.
    private func readBlock() throws(BerthError) -> UnsafeRawBufferPointer? {
        guard try fill() else { return nil }
        let size = TarHeaderLayout.blockSize
        if chunk.count - position >= size {
            let block = UnsafeRawBufferPointer(rebasing: chunk[position..<(position + size)])
            position += size
            return block
        }
        var copied = 0
        while copied < size {
            guard try fill() else { throw truncated("inside a header") }
            let n = min(size - copied, chunk.count - position)
            UnsafeMutableRawBufferPointer(rebasing: scratch[copied..<(copied + n)])
                .copyMemory(from: UnsafeRawBufferPointer(rebasing: chunk[position..<(position + n)]))
            copied += n
            position += n
        }
        return UnsafeRawBufferPointer(scratch)
    }

    private func skip(_ count: Int64, what: String) throws(BerthError) {
        var left = count
        while left > 0 {
            guard try fill() else { throw truncated(what) }
            let n = Int(min(left, Int64(chunk.count - position)))
            position += n
            left -= Int64(n)
        }
    }

    private func readBytes(_ count: Int, what: String) throws(BerthError) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count)
        var left = count
        while left > 0 {
            guard try fill() else { throw truncated(what) }
            let n = min(left, chunk.count - position)
            bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: chunk[position..<(position + n)]))
            position += n
            left -= n
        }
        return bytes
    }

    private static func padding(for size: Int64) -> Int {
        let remainder = Int(size % Int64(TarHeaderLayout.blockSize))
        return remainder == 0 ? 0 : TarHeaderLayout.blockSize - remainder
    }

    // MARK: Entries

    /// Hands the current entry's unread data to `body` in pieces (each straight from the source's buffer).
    /// Throws `dataLoss` if the stream ends early, or what `body` throws.
    func readData(_ body: (UnsafeRawBufferPointer) throws(BerthError) -> Void) throws(BerthError) {
        while remainingData > 0 {
            guard try fill() else { throw truncated("in the data of \(quoted(currentName))") }
            let n = Int(min(remainingData, Int64(chunk.count - position)))
            let piece = UnsafeRawBufferPointer(rebasing: chunk[position..<(position + n)])
            position += n
            remainingData -= Int64(n)
            try body(piece)
        }
    }

    /// The next entry (skipping whatever is left of the previous one), or nil at the end of the archive:
    /// a zero block, or the end of the stream at a block boundary.
    func next() throws(BerthError) -> TarEntry? {
        try skip(remainingData + Int64(padding), what: "in the data of \(quoted(currentName))")
        remainingData = 0
        padding = 0
        var longName: [UInt8]?
        var longLink: [UInt8]?
        var records: [(key: String, value: [UInt8])] = []
        while true {
            guard let block = try readBlock() else { return nil }
            guard let raw = try RawTarHeader.parse(block) else { return nil }
            let label = display(longName ?? raw.name)
            guard raw.size >= 0 else {
                throw .invalidArgument("layer entry \(quoted(label)): negative size in tar header")
            }
            let blockPadding = Self.padding(for: raw.size)
            func extensionData(_ kind: String) throws(BerthError) -> [UInt8] {
                guard raw.size <= TarLimits.maxExtensionSize else {
                    throw .invalidArgument("layer entry \(quoted(label)): \(kind) of \(raw.size) bytes exceeds the 1 MiB limit")
                }
                let data = try readBytes(Int(raw.size), what: "in a \(kind)")
                try skip(Int64(blockPadding), what: "in a \(kind)")
                return data
            }
            let kind: TarEntry.Kind
            switch raw.typeflag {
            case UInt8(ascii: "x"), UInt8(ascii: "X"):
                records += try parsePaxRecords(try extensionData("pax extended header"), entry: label)
                continue
            case UInt8(ascii: "g"):
                try skip(raw.size + Int64(blockPadding), what: "in a pax global header")
                continue
            case UInt8(ascii: "L"):
                longName = trimNul(try extensionData("GNU long name"))
                continue
            case UInt8(ascii: "K"):
                longLink = trimNul(try extensionData("GNU long link name"))
                continue
            case UInt8(ascii: "0"), UInt8(ascii: "7"): kind = .regular
            case 0: kind = (longName ?? raw.name).last == UInt8(ascii: "/") ? .directory : .regular
            case UInt8(ascii: "1"): kind = .hardlink
            case UInt8(ascii: "2"): kind = .symlink
            case UInt8(ascii: "3"): kind = .characterDevice
            case UInt8(ascii: "4"): kind = .blockDevice
            case UInt8(ascii: "5"): kind = .directory
            case UInt8(ascii: "6"): kind = .fifo
            case UInt8(ascii: "S"):
                throw .invalidArgument("layer entry \(quoted(label)): GNU sparse files are not supported")
            default:
                let flag = raw.typeflag >= 0x20 && raw.typeflag < 0x7F
                    ? String(UnicodeScalar(raw.typeflag)) : "\\(\(raw.typeflag))"
                throw .invalidArgument("layer entry \(quoted(label)): unsupported tar entry type '\(flag)'")
            }
            var entry = TarEntry(name: longName ?? raw.name, kind: kind)
            entry.linkName = longLink ?? raw.linkName
            entry.mode = UInt32(truncatingIfNeeded: raw.mode) & 0o7777
            entry.uid = Int(raw.uid)
            entry.gid = Int(raw.gid)
            entry.size = raw.size
            entry.mtime = .init(seconds: raw.mtime, nanoseconds: 0)
            entry.deviceMajor = UInt32(truncatingIfNeeded: raw.devMajor)
            entry.deviceMinor = UInt32(truncatingIfNeeded: raw.devMinor)
            try apply(records, to: &entry, label: label)
            let name = display(entry.name)
            guard entry.name.count <= TarLimits.maxPathLength else {
                throw .invalidArgument("layer entry \(quoted(String(name.prefix(64)) + "...")): path of \(entry.name.count) bytes exceeds \(TarLimits.maxPathLength)")
            }
            guard entry.linkName.count <= TarLimits.maxPathLength else {
                throw .invalidArgument("layer entry \(quoted(name)): link target of \(entry.linkName.count) bytes exceeds \(TarLimits.maxPathLength)")
            }
            guard entry.size >= 0 else {
                throw .invalidArgument("layer entry \(quoted(name)): negative size")
            }
            guard (0...Int(UInt32.max - 1)).contains(entry.uid), (0...Int(UInt32.max - 1)).contains(entry.gid) else {
                throw .invalidArgument("layer entry \(quoted(name)): uid/gid out of range")
            }
            currentName = name
            // As Go's archive/tar: header-only kinds carry no data, whatever their size field says.
            if kind == .regular {
                remainingData = entry.size
                padding = Self.padding(for: entry.size)
            } else {
                entry.size = 0
                remainingData = 0
                padding = 0
            }
            return entry
        }
    }

    private func apply(_ records: [(key: String, value: [UInt8])], to entry: inout TarEntry, label: String) throws(BerthError) {
        func invalid(_ key: String) -> BerthError {
            .invalidArgument("layer entry \(quoted(label)): invalid pax record \(key)")
        }
        for (key, value) in records {
            switch key {
            case "path": entry.name = value
            case "linkpath": entry.linkName = value
            case "size":
                guard let size = parsePaxInteger(value) else { throw invalid(key) }
                guard size >= 0 else { throw .invalidArgument("layer entry \(quoted(label)): negative size in pax header") }
                entry.size = size
            case "uid":
                guard let uid = parsePaxInteger(value) else { throw invalid(key) }
                entry.uid = Int(uid)
            case "gid":
                guard let gid = parsePaxInteger(value) else { throw invalid(key) }
                entry.gid = Int(gid)
            case "mtime":
                guard let time = parsePaxTime(value) else { throw invalid(key) }
                entry.mtime = time
            case "atime":
                guard let time = parsePaxTime(value) else { throw invalid(key) }
                entry.atime = time
            default:
                if key.hasPrefix("SCHILY.xattr.") {
                    let name = String(key.dropFirst("SCHILY.xattr.".count))
                    guard !name.isEmpty else { throw invalid(key) }
                    entry.xattrs.removeAll { $0.name == name }
                    entry.xattrs.append((name, value))
                } else if key.hasPrefix("GNU.sparse.") {
                    throw .invalidArgument("layer entry \(quoted(label)): GNU sparse files are not supported")
                }
                // uname, gname, ctime, comment, charset and vendor records carry nothing Berth applies.
            }
        }
    }

    private func trimNul(_ bytes: [UInt8]) -> [UInt8] {
        guard let end = bytes.firstIndex(of: 0) else { return bytes }
        return Array(bytes[..<end])
    }
}
