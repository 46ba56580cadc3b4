import BerthDaemon
import NIOCore
import NIOEmbedded
import Testing

/// Drives `PingResponder` on an `EmbeddedChannel` with hand-built HTTP/2 frames.
@Suite struct PingResponderTests {
    // MARK: Wire helpers

    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    static func frame(type: UInt8, flags: UInt8 = 0, stream: UInt32 = 0, payload: [UInt8] = []) -> [UInt8] {
        let n = payload.count
        return [UInt8(truncatingIfNeeded: n >> 16), UInt8(truncatingIfNeeded: n >> 8), UInt8(truncatingIfNeeded: n),
                type, flags,
                UInt8(truncatingIfNeeded: stream >> 24), UInt8(truncatingIfNeeded: stream >> 16),
                UInt8(truncatingIfNeeded: stream >> 8), UInt8(truncatingIfNeeded: stream)]
            + payload
    }

    static let settings = frame(type: 0x4, payload: [0x00, 0x04, 0x00, 0x10, 0x00, 0x00])

    static func ping(_ opaque: UInt64, flags: UInt8 = 0, stream: UInt32 = 0) -> [UInt8] {
        frame(type: 0x6, flags: flags, stream: stream, payload: bytes(of: opaque))
    }

    static func pingAck(_ opaque: UInt64) -> [UInt8] { ping(opaque, flags: 0x1) }

    static func bytes(of value: UInt64) -> [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: value >> (56 - 8 * $0)) }
    }

    /// What a client sends first: the preface and its SETTINGS.
    static let opening = preface + settings

    // MARK: Harness

    final class ManualClock {
        var time = NIODeadline.uptimeNanoseconds(1_000_000_000)
        func advance(by amount: TimeAmount) { time = time + amount }
    }

    /// One responder on an `EmbeddedChannel`. Reads are drained after every write:
    /// `EmbeddedChannel.writeInbound` copies its whole inbound buffer each time, which would make
    /// byte-at-a-time feeding quadratic.
    final class Harness {
        let channel: EmbeddedChannel
        let clock = ManualClock()
        private var inbound: [UInt8] = []
        private var outbound: [UInt8] = []

        init(budget: PingResponder.Budget = .default) {
            let clock = self.clock
            self.channel = EmbeddedChannel(handler: PingResponder(budget: budget, now: { clock.time }))
        }

        /// Feeds `bytes` as one read.
        func send(_ bytes: [UInt8]) throws {
            try channel.writeInbound(channel.allocator.buffer(bytes: bytes))
            try drain()
        }

        /// Feeds `bytes` in reads of `chunk` bytes.
        func send(_ bytes: [UInt8], chunk: Int) throws {
            var start = 0
            while start < bytes.count {
                let end = min(start + chunk, bytes.count)
                try send(Array(bytes[start..<end]))
                start = end
            }
        }

        private func drain() throws {
            while let buffer = try channel.readInbound(as: ByteBuffer.self) {
                inbound += buffer.readableBytesView
            }
            while let data = try channel.readOutbound(as: IOData.self) {
                guard case .byteBuffer(let buffer) = data else {
                    Issue.record("unexpected file region written")
                    continue
                }
                outbound += buffer.readableBytesView
            }
        }

        /// The bytes forwarded to the next handler since the last call.
        func forwarded() throws -> [UInt8] {
            try drain()
            defer { inbound = [] }
            return inbound
        }

        /// The bytes written and flushed since the last call.
        func written() throws -> [UInt8] {
            try drain()
            defer { outbound = [] }
            return outbound
        }

        /// A server write passing the handler, as nio-http2's frames do.
        func serverWrites() throws {
            try channel.writeOutbound(IOData.byteBuffer(channel.allocator.buffer(bytes: Self.serverData)))
            #expect(try written() == Self.serverData)
        }

        static let serverData = PingResponderTests.frame(type: 0x0, stream: 1, payload: [1, 2, 3])
    }

    // MARK: Tests

    @Test func prefaceAndSettingsPassThrough() throws {
        let h = Harness()
        try h.send(Self.opening)
        #expect(try h.forwarded() == Self.opening)
        #expect(try h.written() == [])
    }

    @Test(arguments: [1, 5, 23, 24, 25, 30])
    func prefaceSplitAcrossReadsPassesThrough(chunk: Int) throws {
        let h = Harness()
        let stream = Self.opening + Self.ping(7)
        try h.send(stream, chunk: chunk)
        #expect(try h.forwarded() == Self.opening)
        #expect(try h.written() == Self.pingAck(7))
    }

    @Test func pingIsAnsweredAndNotForwarded() throws {
        let h = Harness()
        let data = Self.frame(type: 0x0, stream: 1, payload: Array(repeating: 0xAB, count: 100))
        try h.send(Self.opening + Self.ping(0x0102_0304_0506_0708) + data)
        #expect(try h.forwarded() == Self.opening + data)
        #expect(try h.written() == Self.pingAck(0x0102_0304_0506_0708))
    }

    /// Splits a PING at every byte: inside its header (1...8) and inside its payload (9...16).
    @Test(arguments: 1..<17)
    func pingSplitAcrossReadsIsAnswered(split: Int) throws {
        let h = Harness()
        let trailer = Self.frame(type: 0x8, payload: [0, 0, 0x10, 0])  // WINDOW_UPDATE
        try h.send(Self.opening)
        let ping = Self.ping(0xDEAD_BEEF_0BAD_F00D)
        try h.send(Array(ping[..<split]))
        // Nothing is answered or forwarded until the PING is whole.
        #expect(try h.written() == [])
        try h.send(Array(ping[split...]) + trailer)
        #expect(try h.forwarded() == Self.opening + trailer)
        #expect(try h.written() == Self.pingAck(0xDEAD_BEEF_0BAD_F00D))
    }

    /// A mixed stream fed in reads of many sizes, so headers split at every offset.
    @Test(arguments: [1, 2, 3, 7, 8, 9, 10, 16, 17, 18, 100, 4096, 1 << 20])
    func otherFramesAreForwardedByteIdentical(chunk: Int) throws {
        let h = Harness()
        var payload: [UInt8] = []
        for i in 0..<40_000 { payload.append(UInt8(truncatingIfNeeded: i &* 31)) }
        let headers = Self.frame(type: 0x1, flags: 0x4, stream: 1, payload: Array(repeating: 0x82, count: 33))
        let bigData = Self.frame(type: 0x0, stream: 1, payload: payload)
        let empty = Self.frame(type: 0x0, flags: 0x1, stream: 1)
        let windowUpdate = Self.frame(type: 0x8, stream: 1, payload: [0, 1, 0, 0])
        let rst = Self.frame(type: 0x3, stream: 3, payload: [0, 0, 0, 8])
        let unknown = Self.frame(type: 0xEE, flags: 0xFF, stream: 5, payload: [9, 9])

        let expected = Self.opening + headers + bigData + windowUpdate + empty + rst + unknown
        let sent = Self.opening + headers + Self.ping(1) + bigData + windowUpdate + Self.ping(2)
            + empty + rst + Self.ping(3) + unknown + Self.ping(4)
        try h.send(sent, chunk: chunk)
        #expect(try h.forwarded() == expected)
        #expect(try h.written() == Self.pingAck(1) + Self.pingAck(2) + Self.pingAck(3) + Self.pingAck(4))
    }

    @Test func pingAcksAreForwardedNotAnswered() throws {
        let h = Harness()
        let stream = Self.opening + Self.pingAck(42) + Self.pingAck(43)
        try h.send(stream)
        #expect(try h.forwarded() == stream)
        #expect(try h.written() == [])
    }

    @Test func malformedPingsAreLeftToNIOHTTP2() throws {
        let h = Harness()
        let onStream = Self.ping(1, stream: 1)
        let tooLong = Self.frame(type: 0x6, payload: Array(repeating: 0, count: 9))
        let stream = Self.opening + onStream + tooLong
        try h.send(stream)
        #expect(try h.forwarded() == stream)
        #expect(try h.written() == [])
    }

    @Test func pingBeforeTheFirstFrameIsForwarded() throws {
        let h = Harness()
        let stream = Self.preface + Self.ping(5) + Self.settings + Self.ping(6)
        try h.send(stream)
        #expect(try h.forwarded() == Self.preface + Self.ping(5) + Self.settings)
        #expect(try h.written() == Self.pingAck(6))
    }

    @Test func pingInsideAHeaderBlockIsForwarded() throws {
        let h = Harness()
        let open = Self.frame(type: 0x1, stream: 1, payload: [0x82])  // HEADERS without END_HEADERS
        let continuation = Self.frame(type: 0x9, flags: 0x4, stream: 1, payload: [0x84])
        let stream = Self.opening + open + Self.ping(1) + continuation + Self.ping(2)
        try h.send(stream)
        #expect(try h.forwarded() == Self.opening + open + Self.ping(1) + continuation)
        #expect(try h.written() == Self.pingAck(2))
    }

    @Test func pingsOverBudgetWithoutServerWritesAreForwarded() throws {
        let h = Harness(budget: PingResponder.Budget(perSecond: 1, burst: 2))
        try h.send(Self.opening)
        _ = try h.forwarded()

        try h.send(Self.ping(1) + Self.ping(2) + Self.ping(3) + Self.ping(4))
        #expect(try h.written() == Self.pingAck(1) + Self.pingAck(2))
        #expect(try h.forwarded() == Self.ping(3) + Self.ping(4))

        // Still no budget: forwarded, even as separate reads.
        try h.send(Self.ping(5))
        #expect(try h.forwarded() == Self.ping(5))
        #expect(try h.written() == [])

        // A second refills one token.
        h.clock.advance(by: .seconds(1))
        try h.send(Self.ping(6) + Self.ping(7))
        #expect(try h.written() == Self.pingAck(6))
        #expect(try h.forwarded() == Self.ping(7))
    }

    @Test func serverWriteLetsTheNextPingBeAnswered() throws {
        let h = Harness(budget: PingResponder.Budget(perSecond: 1, burst: 1))
        try h.send(Self.opening)
        _ = try h.forwarded()

        try h.send(Self.ping(1) + Self.ping(2))  // budget answers 1, 2 is over it
        #expect(try h.written() == Self.pingAck(1))
        #expect(try h.forwarded() == Self.ping(2))

        // BDP-style: the server sends data, the client pings. Each write buys one answer,
        // however many there are, with the budget exhausted and the clock standing still.
        for opaque in UInt64(10)..<UInt64(20) {
            try h.serverWrites()
            try h.send(Self.ping(opaque))
            #expect(try h.written() == Self.pingAck(opaque))
            #expect(try h.forwarded() == [])
        }

        // One write buys one answer, not two.
        try h.serverWrites()
        try h.send(Self.ping(30) + Self.ping(31))
        #expect(try h.written() == Self.pingAck(30))
        #expect(try h.forwarded() == Self.ping(31))
    }

    @Test func nothingIsAnsweredWhileTheChannelIsNotWritable() throws {
        let h = Harness()
        try h.send(Self.opening)
        _ = try h.forwarded()

        h.channel.isWritable = false
        try h.serverWrites()
        try h.send(Self.ping(1))
        #expect(try h.forwarded() == Self.ping(1))
        #expect(try h.written() == [])

        h.channel.isWritable = true
        try h.send(Self.ping(2))
        #expect(try h.forwarded() == [])
        #expect(try h.written() == Self.pingAck(2))
    }

    @Test func removingTheHandlerHandsOnAPartialFrame() throws {
        let h = Harness()
        try h.send(Self.opening + Array(Self.ping(9)[..<5]))
        #expect(try h.forwarded() == Self.opening)
        let responder = try h.channel.pipeline.syncOperations.handler(type: PingResponder.self)
        try h.channel.pipeline.syncOperations.removeHandler(responder).wait()
        #expect(try h.forwarded() == Array(Self.ping(9)[..<5]))
    }
}
