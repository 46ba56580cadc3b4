/// HTTP/2 framing (RFC 9113 §4 and §6): the frame header, the types and flags a gRPC server
/// meets, and the frames it writes.
enum HTTP2 {
    /// The 24 bytes every client connection starts with (§3.4).
    static let clientPreface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    /// The largest frame payload either end may send without SETTINGS_MAX_FRAME_SIZE (§6.5.2).
    /// berthd never raises its own.
    static let defaultMaxFrameSize = 16_384
    static let defaultWindowSize = 65_535
    static let maxWindowSize = (1 << 31) - 1

    enum FrameType: UInt8 {
        case data = 0x0, headers = 0x1, priority = 0x2, rstStream = 0x3, settings = 0x4
        case pushPromise = 0x5, ping = 0x6, goAway = 0x7, windowUpdate = 0x8, continuation = 0x9
    }

    enum Flags {
        static let endStream: UInt8 = 0x1
        static let ack: UInt8 = 0x1
        static let endHeaders: UInt8 = 0x4
        static let padded: UInt8 = 0x8
        static let priority: UInt8 = 0x20
    }

    enum Setting: UInt16 {
        case headerTableSize = 0x1, enablePush = 0x2, maxConcurrentStreams = 0x3
        case initialWindowSize = 0x4, maxFrameSize = 0x5, maxHeaderListSize = 0x6
    }

    /// Error codes of RST_STREAM and GOAWAY (§7).
    enum ErrorCode: UInt32 {
        case noError = 0x0, protocolError = 0x1, internalError = 0x2, flowControlError = 0x3
        case settingsTimeout = 0x4, streamClosed = 0x5, frameSizeError = 0x6, refusedStream = 0x7
        case cancel = 0x8, compressionError = 0x9, connectError = 0xA, enhanceYourCalm = 0xB
    }

    /// A connection-level protocol error: the connection ends with GOAWAY carrying `code`.
    struct ConnectionError: Error, CustomStringConvertible {
        let code: ErrorCode
        let description: String
        init(_ code: ErrorCode, _ description: String) {
            self.code = code
            self.description = description
        }
    }

    /// The 9-byte frame header (§4.1).
    struct FrameHeader {
        static let size = 9
        var length: Int
        var type: UInt8
        var flags: UInt8
        var streamID: UInt32

        init(length: Int, type: UInt8, flags: UInt8, streamID: UInt32) {
            self.length = length
            self.type = type
            self.flags = flags
            self.streamID = streamID
        }

        /// Parses the header at the start of `bytes`; the caller has checked that 9 bytes are there.
        init(_ bytes: ArraySlice<UInt8>) {
            let offset = bytes.startIndex
            length = Int(bytes[offset]) << 16 | Int(bytes[offset + 1]) << 8 | Int(bytes[offset + 2])
            type = bytes[offset + 3]
            flags = bytes[offset + 4]
            streamID = readUInt32(bytes, at: offset + 5) & 0x7FFF_FFFF
        }

        func has(_ flag: UInt8) -> Bool { flags & flag != 0 }
    }

    /// The big-endian 32 bits at `offset` (an index of `bytes`, not relative to its start).
    static func readUInt32(_ bytes: ArraySlice<UInt8>, at offset: Int) -> UInt32 {
        UInt32(bytes[offset]) << 24 | UInt32(bytes[offset + 1]) << 16 | UInt32(bytes[offset + 2]) << 8
            | UInt32(bytes[offset + 3])
    }

    // MARK: Writing

    static func appendFrameHeader(length: Int, type: FrameType, flags: UInt8, streamID: UInt32, to out: inout [UInt8]) {
        out.append(UInt8(truncatingIfNeeded: length >> 16))
        out.append(UInt8(truncatingIfNeeded: length >> 8))
        out.append(UInt8(truncatingIfNeeded: length))
        out.append(type.rawValue)
        out.append(flags)
        appendUInt32(streamID & 0x7FFF_FFFF, to: &out)
    }

    static func appendUInt32(_ value: UInt32, to out: inout [UInt8]) {
        out.append(UInt8(truncatingIfNeeded: value >> 24))
        out.append(UInt8(truncatingIfNeeded: value >> 16))
        out.append(UInt8(truncatingIfNeeded: value >> 8))
        out.append(UInt8(truncatingIfNeeded: value))
    }

    static func appendSettings(_ settings: [(Setting, UInt32)], to out: inout [UInt8]) {
        appendFrameHeader(length: settings.count * 6, type: .settings, flags: 0, streamID: 0, to: &out)
        for (setting, value) in settings {
            out.append(UInt8(truncatingIfNeeded: setting.rawValue >> 8))
            out.append(UInt8(truncatingIfNeeded: setting.rawValue))
            appendUInt32(value, to: &out)
        }
    }

    static func appendSettingsAck(to out: inout [UInt8]) {
        appendFrameHeader(length: 0, type: .settings, flags: Flags.ack, streamID: 0, to: &out)
    }

    static func appendPingAck(_ opaque: ArraySlice<UInt8>, to out: inout [UInt8]) {
        appendFrameHeader(length: 8, type: .ping, flags: Flags.ack, streamID: 0, to: &out)
        out.append(contentsOf: opaque)
    }

    static func appendWindowUpdate(streamID: UInt32, increment: Int, to out: inout [UInt8]) {
        appendFrameHeader(length: 4, type: .windowUpdate, flags: 0, streamID: streamID, to: &out)
        appendUInt32(UInt32(increment) & 0x7FFF_FFFF, to: &out)
    }

    static func appendRSTStream(streamID: UInt32, code: ErrorCode, to out: inout [UInt8]) {
        appendFrameHeader(length: 4, type: .rstStream, flags: 0, streamID: streamID, to: &out)
        appendUInt32(code.rawValue, to: &out)
    }

    static func appendGoAway(lastStreamID: UInt32, code: ErrorCode, debug: String, to out: inout [UInt8]) {
        let debugBytes = Array(debug.utf8.prefix(256))
        appendFrameHeader(length: 8 + debugBytes.count, type: .goAway, flags: 0, streamID: 0, to: &out)
        appendUInt32(lastStreamID & 0x7FFF_FFFF, to: &out)
        appendUInt32(code.rawValue, to: &out)
        out.append(contentsOf: debugBytes)
    }

    /// Appends a header block as HEADERS plus as many CONTINUATIONs as `maxFrameSize` needs.
    static func appendHeaders(_ block: [UInt8], streamID: UInt32, endStream: Bool, maxFrameSize: Int, to out: inout [UInt8]) {
        var start = 0
        var type = FrameType.headers
        repeat {
            let end = min(block.count, start + maxFrameSize)
            var flags: UInt8 = end == block.count ? Flags.endHeaders : 0
            if type == .headers && endStream { flags |= Flags.endStream }
            appendFrameHeader(length: end - start, type: type, flags: flags, streamID: streamID, to: &out)
            out.append(contentsOf: block[start..<end])
            start = end
            type = .continuation
        } while start < block.count
    }
}
