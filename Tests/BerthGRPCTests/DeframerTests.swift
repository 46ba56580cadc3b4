@testable import BerthGRPC
import GRPCCore
import Testing

/// gRPC's length-prefixed messages out of DATA frames of any size.
@Suite struct DeframerTests {
    static func framed(_ message: [UInt8]) -> [UInt8] {
        let n = UInt32(message.count)
        return [0, UInt8(n >> 24), UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF)] + message
    }

    @Test func messagesInAnyChunking() throws {
        let messages: [[UInt8]] = [[], [1], (0..<100_000).map { UInt8(truncatingIfNeeded: $0) }, [7, 7, 7]]
        let stream = messages.flatMap(Self.framed)
        for chunk in [1, 3, 5, 16_384, stream.count] {
            var deframer = MessageDeframer()
            var out: [[UInt8]] = []
            var offset = 0
            while offset < stream.count {
                let end = min(stream.count, offset + chunk)
                out += try deframer.append(stream[offset..<end], maxMessageSize: 1 << 20)
                offset = end
            }
            #expect(out == messages, "chunks of \(chunk)")
            #expect(deframer.isEmpty)
        }
    }

    @Test func limitsAndCompressionAreRefused() {
        var deframer = MessageDeframer()
        #expect(throws: RPCError.self) { try deframer.append(Self.framed([UInt8](repeating: 0, count: 11))[...], maxMessageSize: 10) }
        var split = MessageDeframer()
        // The length alone, before the message arrives, is enough to refuse it.
        #expect(throws: RPCError.self) {
            _ = try split.append([0, 0][...], maxMessageSize: 10)
            _ = try split.append([0, 1, 0][...], maxMessageSize: 10)
        }
        var compressed = MessageDeframer()
        #expect(throws: RPCError.self) { try compressed.append([1, 0, 0, 0, 1, 9][...], maxMessageSize: 10) }
    }
}
