/// One ttrpc frame: a 10-byte header followed by `data`.
///
/// ```
/// off 0  uint32 length     bytes of data, header excluded (big-endian)
/// off 4  uint32 streamID   odd for streams the connecting side opens
/// off 8  uint8  type       1 request, 2 response, 3 data
/// off 9  uint8  flags      0x01 remote closed, 0x02 remote open, 0x04 no data
/// off 10 data[length]
/// ```
public struct TTRPCFrame: Sendable, Hashable {
    /// Bytes in a frame header.
    public static let headerSize = 10
    /// The largest `data` either side accepts: 4 MiB, as ttrpc's `messageLengthMax`.
    public static let maxDataLength = 4 << 20

    public var streamID: UInt32
    public var type: TTRPCFrameType
    public var flags: TTRPCFrameFlags
    public var data: [UInt8]

    public init(streamID: UInt32, type: TTRPCFrameType, flags: TTRPCFrameFlags = [], data: [UInt8] = []) {
        self.streamID = streamID
        self.type = type
        self.flags = flags
        self.data = data
    }

    /// The frame as it goes on the wire: header, then data. Does not check `maxDataLength`;
    /// senders check it first (``TTRPCFrame/checkSize()``).
    public func encoded() -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Self.headerSize + data.count)
        appendBigEndian(UInt32(truncatingIfNeeded: data.count), to: &bytes)
        appendBigEndian(streamID, to: &bytes)
        bytes.append(type.rawValue)
        bytes.append(flags.rawValue)
        bytes.append(contentsOf: data)
        return bytes
    }

    /// Fails when `data` is larger than the peer will accept.
    ///
    /// - Throws: ``TTRPCError`` with code `resourceExhausted` and ttrpc's message.
    public func checkSize() throws(TTRPCError) {
        if data.count > Self.maxDataLength {
            throw TTRPCError.messageTooLarge(data.count)
        }
    }
}

/// A frame's type byte. Kept as a raw value so a frame of a type this side does not know still
/// decodes (receivers ignore it, as ttrpc does).
public struct TTRPCFrameType: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let request = TTRPCFrameType(rawValue: 1)
    public static let response = TTRPCFrameType(rawValue: 2)
    /// Further messages of a stream (ttrpc 1.2).
    public static let data = TTRPCFrameType(rawValue: 3)

    public var description: String {
        switch self {
        case .request: "request"
        case .response: "response"
        case .data: "data"
        default: "type \(rawValue)"
        }
    }
}

/// A frame's flag byte.
public struct TTRPCFrameFlags: OptionSet, Sendable, Hashable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// The sender will send nothing more on this stream.
    public static let remoteClosed = TTRPCFrameFlags(rawValue: 0x01)
    /// The sender (a client) will send further data frames on this stream.
    public static let remoteOpen = TTRPCFrameFlags(rawValue: 0x02)
    /// The frame carries no message, not even an empty one.
    public static let noData = TTRPCFrameFlags(rawValue: 0x04)
}

/// Cuts a byte stream into frames. A value: feed it whatever `read` returned, in any pieces, and
/// it yields each frame once its last byte has arrived.
///
/// A frame longer than ``TTRPCFrame/maxDataLength`` is skipped without being buffered and reported
/// as ``Event/oversized(streamID:type:length:)`` once its last byte has gone by, so the receiver can
/// answer that stream and keep the connection.
public struct TTRPCFrameDecoder: Sendable {
    public enum Event: Sendable, Hashable {
        case frame(TTRPCFrame)
        case oversized(streamID: UInt32, type: TTRPCFrameType, length: Int)
    }

    private var header: [UInt8] = []
    private var current: (streamID: UInt32, type: TTRPCFrameType, flags: TTRPCFrameFlags, length: Int)?
    private var body: [UInt8] = []
    private var discarding = 0

    public init() {}

    /// True when no partial frame is buffered.
    public var isIdle: Bool { header.isEmpty && current == nil }

    /// Consumes `bytes` and returns the frames (and oversized reports) they complete, in order.
    public mutating func push(_ bytes: some Collection<UInt8>) -> [Event] {
        var events: [Event] = []
        var rest = bytes[...]
        while !rest.isEmpty {
            guard let frame = current else {
                let taken = rest.prefix(TTRPCFrame.headerSize - header.count)
                header.append(contentsOf: taken)
                rest = rest[taken.endIndex...]
                if header.count == TTRPCFrame.headerSize {
                    startFrame(&events)
                }
                continue
            }
            if discarding > 0 {
                let skipped = rest.prefix(discarding)
                discarding -= skipped.count
                rest = rest[skipped.endIndex...]
                if discarding == 0 {
                    events.append(.oversized(streamID: frame.streamID, type: frame.type, length: frame.length))
                    current = nil
                }
                continue
            }
            let taken = rest.prefix(frame.length - body.count)
            body.append(contentsOf: taken)
            rest = rest[taken.endIndex...]
            if body.count == frame.length {
                finishFrame(&events)
            }
        }
        return events
    }

    private mutating func startFrame(_ events: inout [Event]) {
        let length = Int(readBigEndian(header, at: 0))
        let streamID = readBigEndian(header, at: 4)
        current = (streamID, TTRPCFrameType(rawValue: header[8]), TTRPCFrameFlags(rawValue: header[9]), length)
        header.removeAll(keepingCapacity: true)
        if length > TTRPCFrame.maxDataLength {
            discarding = length
        } else if length == 0 {
            finishFrame(&events)
        } else {
            body.reserveCapacity(length)
        }
    }

    private mutating func finishFrame(_ events: inout [Event]) {
        guard let frame = current else { return }
        events.append(.frame(TTRPCFrame(streamID: frame.streamID, type: frame.type, flags: frame.flags, data: body)))
        body = []
        current = nil
    }
}

private func appendBigEndian(_ value: UInt32, to bytes: inout [UInt8]) {
    bytes.append(UInt8(truncatingIfNeeded: value >> 24))
    bytes.append(UInt8(truncatingIfNeeded: value >> 16))
    bytes.append(UInt8(truncatingIfNeeded: value >> 8))
    bytes.append(UInt8(truncatingIfNeeded: value))
}

private func readBigEndian(_ bytes: [UInt8], at offset: Int) -> UInt32 {
    UInt32(bytes[offset]) << 24 | UInt32(bytes[offset + 1]) << 16 | UInt32(bytes[offset + 2]) << 8 | UInt32(bytes[offset + 3])
}
