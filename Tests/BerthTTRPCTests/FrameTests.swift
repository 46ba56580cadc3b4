import BerthTTRPC
import Testing

@Suite("Frames")
struct FrameTests {
    @Test func headerIsBigEndianLengthStreamTypeFlags() {
        let frame = TTRPCFrame(streamID: 0x0102_0304, type: .data, flags: [.remoteClosed, .noData], data: [0xAA, 0xBB])
        #expect(frame.encoded() == [0, 0, 0, 2, 1, 2, 3, 4, 3, 5, 0xAA, 0xBB])
    }

    @Test func decodesFramesSplitAtEveryByte() {
        let frames = [
            TTRPCFrame(streamID: 1, type: .request, data: Array("hello".utf8)),
            TTRPCFrame(streamID: 3, type: .response),
            TTRPCFrame(streamID: 5, type: .data, flags: .remoteOpen, data: [1, 2, 3]),
        ]
        let bytes = frames.flatMap { $0.encoded() }
        for split in 0...bytes.count {
            var decoder = TTRPCFrameDecoder()
            let events = decoder.push(bytes[..<split]) + decoder.push(bytes[split...])
            #expect(events == frames.map { .frame($0) }, "split at \(split)")
            #expect(decoder.isIdle)
        }
        var decoder = TTRPCFrameDecoder()
        let oneByteAtATime = bytes.flatMap { decoder.push([$0]) }
        #expect(oneByteAtATime == frames.map { .frame($0) })
    }

    @Test func keepsUnknownFrameTypes() {
        var decoder = TTRPCFrameDecoder()
        let events = decoder.push([0, 0, 0, 1, 0, 0, 0, 7, 9, 0x80, 42])
        #expect(events == [.frame(TTRPCFrame(streamID: 7, type: TTRPCFrameType(rawValue: 9), flags: TTRPCFrameFlags(rawValue: 0x80), data: [42]))])
    }

    @Test func skipsAnOversizedFrameAndReportsItOnceItHasPassed() {
        let length = TTRPCFrame.maxDataLength + 1
        var decoder = TTRPCFrameDecoder()
        #expect(decoder.push([0, 0x40, 0, 1, 0, 0, 0, 9, 1, 0]).isEmpty)
        #expect(decoder.push([UInt8](repeating: 0, count: length - 1)).isEmpty)
        let next = TTRPCFrame(streamID: 11, type: .request, data: [1])
        let events = decoder.push([0] + next.encoded())
        #expect(events == [.oversized(streamID: 9, type: .request, length: length), .frame(next)])
    }

    @Test func frameAtTheLimitIsAcceptedAndOneOverIsRefusedForSending() throws {
        let atLimit = TTRPCFrame(streamID: 1, type: .request, data: [UInt8](repeating: 1, count: TTRPCFrame.maxDataLength))
        try atLimit.checkSize()
        var decoder = TTRPCFrameDecoder()
        #expect(decoder.push(atLimit.encoded()) == [.frame(atLimit)])

        let over = TTRPCFrame(streamID: 1, type: .request, data: [UInt8](repeating: 1, count: TTRPCFrame.maxDataLength + 1))
        #expect(throws: TTRPCError(.resourceExhausted, "message length 4194305 exceed maximum message size of 4194304")) {
            try over.checkSize()
        }
    }
}
