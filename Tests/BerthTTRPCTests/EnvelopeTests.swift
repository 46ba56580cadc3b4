import BerthCore
import BerthTTRPC
import Testing

@Suite("Envelopes")
struct EnvelopeTests {
    @Test func requestEncodesFieldsInOrder() {
        let request = TTRPCRequest(
            service: "s", method: "m", payload: [0xFF], timeoutNanoseconds: 300,
            metadata: [TTRPCKeyValue(key: "k", value: "v")])
        #expect(request.encoded() == [
            0x0A, 1, 0x73,  // 1 service "s"
            0x12, 1, 0x6D,  // 2 method "m"
            0x1A, 1, 0xFF,  // 3 payload
            0x20, 0xAC, 0x02,  // 4 timeout_nano 300
            0x2A, 6, 0x0A, 1, 0x6B, 0x12, 1, 0x76,  // 5 KeyValue{k, v}
        ])
    }

    @Test func requestRoundTrips() throws {
        let request = TTRPCRequest(
            service: "containerd.task.v2.Task", method: "Wait", payload: Array(0...255),
            timeoutNanoseconds: 5_000_000_000,
            metadata: [
                TTRPCKeyValue(key: TTRPCMetadataKey.namespace, value: "default"),
                TTRPCKeyValue(key: "x", value: ""), TTRPCKeyValue(key: "x", value: "2"),
            ])
        #expect(try TTRPCRequest(decoding: request.encoded()) == request)
        #expect(try TTRPCRequest(decoding: []) == TTRPCRequest(service: "", method: ""))
    }

    @Test func decodingSkipsUnknownFieldsOfEveryWireType() throws {
        let request = TTRPCRequest(service: "svc", method: "M", payload: [1, 2])
        var bytes: [UInt8] = [0x30, 0xFF, 0x01]  // 6 varint 255
        bytes += [0x39] + [UInt8](repeating: 9, count: 8)  // 7 fixed64
        bytes += request.encoded()
        bytes += [0x42, 3, 1, 2, 3]  // 8 length-delimited
        bytes += [0x4D, 1, 2, 3, 4]  // 9 fixed32
        bytes += [0xA0, 0x1F, 5]  // 500 varint
        #expect(try TTRPCRequest(decoding: bytes) == request)

        let response = TTRPCResponse(status: TTRPCStatus(code: .notFound, message: "gone"), payload: [3])
        #expect(try TTRPCResponse(decoding: [0x18, 1] + response.encoded() + [0x22, 0]) == response)
    }

    @Test func emptySuccessIsZeroBytes() throws {
        #expect(TTRPCResponse().encoded() == [])
        #expect(try TTRPCResponse(decoding: []) == TTRPCResponse())
        #expect(TTRPCResponse(payload: [1]).encoded() == [0x12, 1, 1])
    }

    @Test func statusRoundTripsWithDetailsAndNegativeCodes() throws {
        let status = TTRPCStatus(code: .unavailable, message: "shim gone", details: [[0x0A, 1, 0x61], []])
        let response = TTRPCResponse(status: status)
        #expect(try TTRPCResponse(decoding: response.encoded()) == response)
        let odd = TTRPCStatus(code: TTRPCStatus.Code(rawValue: -3), message: "")
        #expect(odd.encoded().count == 11)  // tag + ten-byte varint
        #expect(try TTRPCStatus(decoding: odd.encoded()) == odd)
        #expect(odd.code.description == "Code(-3)")
    }

    @Test(arguments: [
        [0x0A] as [UInt8],  // key without length
        [0x0A, 5, 0x61],  // length past the end
        [0x20, 0x80],  // truncated varint
        [0x20] + [UInt8](repeating: 0x80, count: 10) + [1],  // eleven-byte varint
        [0x39, 1, 2],  // truncated fixed64
        [0x0B],  // group start
        [0x00, 1],  // field number 0
    ])
    func malformedBytesAreInvalidArgument(bytes: [UInt8]) {
        #expect {
            try TTRPCRequest(decoding: bytes)
        } throws: { error in
            (error as? BerthError)?.code == .invalidArgument && "\(error)".contains("ttrpc request: malformed protobuf")
        }
    }
}

@Suite("Status codes")
struct StatusTests {
    @Test func berthCodesMapToGRPCNumbersAndBack() {
        let expected: [(BerthError.Code, Int32)] = [
            (.cancelled, 1), (.invalidArgument, 3), (.deadlineExceeded, 4), (.notFound, 5),
            (.alreadyExists, 6), (.permissionDenied, 7), (.resourceExhausted, 8),
            (.failedPrecondition, 9), (.aborted, 10), (.outOfRange, 11), (.unimplemented, 12),
            (.internal, 13), (.unavailable, 14), (.dataLoss, 15), (.unknown, 2),
        ]
        for (berth, number) in expected {
            #expect(TTRPCStatus.Code(berth).rawValue == number, "\(berth)")
            #expect(TTRPCStatus.Code(rawValue: number).berthCode == berth, "\(number)")
        }
        #expect(TTRPCStatus.Code.unauthenticated.berthCode == .permissionDenied)
        #expect(TTRPCStatus.Code(rawValue: 99).berthCode == .internal)
    }

    @Test func errorsBecomeStatuses() {
        #expect(TTRPCStatus(from: BerthError.notFound("container c1: not found")) == TTRPCStatus(code: .notFound, message: "container c1: not found"))
        #expect(TTRPCStatus(from: TTRPCError(.aborted, "x")) == TTRPCStatus(code: .aborted, message: "x"))
        #expect(TTRPCStatus(from: CancellationError()).code == .canceled)
        #expect(TTRPCStatus(from: SomeOtherError()) == TTRPCStatus(code: .unknown, message: "something else broke"))
    }

    @Test func closedIsNotAStatus() {
        #expect(TTRPCError.closed.description == "ttrpc: closed")
        #expect(TTRPCError.closed.code == .unavailable)
        #expect(TTRPCError.closed.berthError.code == .unavailable)
        let error = TTRPCError(.notFound, "task t1: not found")
        #expect(error.berthError.code == .notFound)
        #expect(error.berthError.message == "task t1: not found")
        #expect(error.description == "ttrpc: NotFound: task t1: not found")
    }
}
