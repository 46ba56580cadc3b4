#if canImport(Glibc)
import Glibc
#endif
@testable import BerthGRPC
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Synchronization
import Testing

/// GRPCServer on GRPCUnixTransport, called by grpc-swift's NIO client: a second, independent
/// HTTP/2 and gRPC implementation on the other end.
@Suite struct ServerTests {
    struct Bytes: MessageSerializer, MessageDeserializer {
        func serialize<Output: GRPCContiguousBytes>(_ message: [UInt8]) throws -> Output { Output(message) }
        func deserialize<Input: GRPCContiguousBytes>(_ bytes: Input) throws -> [UInt8] {
            bytes.withUnsafeBytes { Array($0) }
        }
    }

    static let echo = MethodDescriptor(fullyQualifiedService: "test.Echo", method: "Echo")
    static let fail = MethodDescriptor(fullyQualifiedService: "test.Echo", method: "Fail")
    static let count = MethodDescriptor(fullyQualifiedService: "test.Echo", method: "Count")
    static let collect = MethodDescriptor(fullyQualifiedService: "test.Echo", method: "Collect")
    static let wait = MethodDescriptor(fullyQualifiedService: "test.Echo", method: "Wait")

    /// How many Wait handlers have started and how many saw their task cancelled.
    static let waits = Mutex((started: 0, cancelled: 0))

    /// Echo returns its request and metadata; Fail answers with the status the request names;
    /// Count streams N messages of 1 KiB; Collect sums the sizes of a client stream.
    struct EchoService: RegistrableRPCService {
        func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
            router.registerHandler(forMethod: ServerTests.echo, deserializer: Bytes(), serializer: Bytes()) { request, _ in
                var message: [UInt8] = []
                for try await part in request.messages { message += part }
                var metadata = Metadata()
                for (key, value) in request.metadata where key.hasPrefix("x-") { metadata.addString(key, forKey: "echoed"); _ = value }
                if let binary = request.metadata[binaryValues: "x-blob-bin"].first(where: { _ in true }) {
                    metadata.addBinary(binary, forKey: "x-blob-bin")
                }
                return StreamingServerResponse(single: ServerResponse(message: message, metadata: metadata))
            }
            router.registerHandler(forMethod: ServerTests.fail, deserializer: Bytes(), serializer: Bytes()) { request, _ in
                for try await _ in request.messages {}
                throw RPCError(code: .failedPrecondition, message: "container \"x\" is running: 100% naïve")
            }
            router.registerHandler(forMethod: ServerTests.count, deserializer: Bytes(), serializer: Bytes()) { request, _ in
                var n = 0
                for try await part in request.messages { n = Int(part.first ?? 0) * 100 }
                let total = n
                return StreamingServerResponse { writer in
                    for i in 0..<total { try await writer.write([UInt8](repeating: UInt8(i & 0xFF), count: 1024)) }
                    return [:]
                }
            }
            router.registerHandler(forMethod: ServerTests.wait, deserializer: Bytes(), serializer: Bytes()) { request, _ in
                // Waits for nothing, as an events subscription with no events does.
                ServerTests.waits.withLock { $0.started += 1 }
                await withTaskCancellationHandler {
                    try? await Task.sleep(for: .seconds(3600))
                } onCancel: {
                    ServerTests.waits.withLock { $0.cancelled += 1 }
                }
                return StreamingServerResponse { _ in [:] }
            }
            router.registerHandler(forMethod: ServerTests.collect, deserializer: Bytes(), serializer: Bytes()) { request, _ in
                var total = 0
                for try await part in request.messages { total += part.count }
                return StreamingServerResponse(single: ServerResponse(message: Array(String(total).utf8)))
            }
        }
    }

    static func withServer(_ body: (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> Void) async throws {
        try await withServer { client, _ in try await body(client) }
    }

    static func withServer(directMethods: [DirectMethod] = [],
                           _ body: (GRPCClient<HTTP2ClientTransport.Posix>, String) async throws -> Void) async throws {
        var template = Array("/tmp/berth-grpc-XXXXXX".utf8CString)
        let dir = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        let socket = dir + "/s.sock"
        defer {
            unlink(socket)
            unlink(socket + ".lock")
            rmdir(dir)
        }
        let transport = try GRPCUnixTransport(path: socket, maxMessageSize: 8 << 20, directMethods: directMethods)
        let server = GRPCServer(transport: transport, services: [EchoService()])
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await server.serve() }
            try await transport.waitUntilListening()
            let clientTransport = try HTTP2ClientTransport.Posix(target: .unixDomainSocket(path: socket), transportSecurity: .plaintext)
            let client = GRPCClient(transport: clientTransport)
            group.addTask { try await client.runConnections() }
            do {
                try await body(client, socket)
            } catch {
                client.beginGracefulShutdown()
                server.beginGracefulShutdown()
                throw error
            }
            client.beginGracefulShutdown()
            server.beginGracefulShutdown()
        }
    }

    static func unary(_ client: GRPCClient<HTTP2ClientTransport.Posix>, _ method: MethodDescriptor, _ message: [UInt8],
                      metadata: Metadata = [:]) async throws -> ([UInt8], Metadata) {
        try await client.unary(request: ClientRequest(message: message, metadata: metadata), descriptor: method,
                               serializer: Bytes(), deserializer: Bytes(), options: .defaults) { response in
            (try response.message, response.metadata)
        }
    }

    @Test func unaryCallsSmallAndLarge() async throws {
        try await Self.withServer { client in
            var metadata = Metadata()
            metadata.addString("1", forKey: "x-one")
            metadata.addBinary([0, 1, 2, 255], forKey: "x-blob-bin")
            let (small, replyMetadata) = try await Self.unary(client, Self.echo, Array("hello".utf8), metadata: metadata)
            #expect(small == Array("hello".utf8))
            #expect(Array(replyMetadata[binaryValues: "x-blob-bin"]) == [[0, 1, 2, 255]])
            // Larger than the client's windows (the client takes at most 4 MiB)...
            let big = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
            let (echoed, _) = try await Self.unary(client, Self.echo, big)
            #expect(echoed == big)
            // ...and than a stream's window on the server (4 MiB).
            let total = try await client.clientStreaming(
                request: StreamingClientRequest(producer: { writer in try await writer.write([UInt8](repeating: 3, count: 6 << 20)) }),
                descriptor: Self.collect, serializer: Bytes(), deserializer: Bytes(), options: .defaults
            ) { response in String(decoding: try response.message, as: UTF8.self) }
            #expect(total == String(6 << 20))
            // Many calls on one connection, some at once.
            try await withThrowingTaskGroup { group in
                for i in 0..<50 { group.addTask { _ = try await Self.unary(client, Self.echo, [UInt8(i)]) } }
                try await group.waitForAll()
            }
        }
    }

    @Test func errorsCarryCodeAndMessage() async throws {
        try await Self.withServer { client in
            do {
                _ = try await Self.unary(client, Self.fail, [])
                Issue.record("Fail succeeded")
            } catch let error as RPCError {
                #expect(error.code == .failedPrecondition)
                #expect(error.message == "container \"x\" is running: 100% naïve")
            }
            do {
                _ = try await Self.unary(client, MethodDescriptor(fullyQualifiedService: "test.Echo", method: "Missing"), [])
                Issue.record("an unknown method succeeded")
            } catch let error as RPCError {
                #expect(error.code == .unimplemented)
            }
            do {
                _ = try await Self.unary(client, Self.echo, [UInt8](repeating: 1, count: 9 << 20))
                Issue.record("a message over the limit was accepted")
            } catch let error as RPCError {
                #expect(error.code == .resourceExhausted)
            }
            // The connection still serves.
            #expect(try await Self.unary(client, Self.echo, [7]).0 == [7])
        }
    }

    @Test func streamsBothWays() async throws {
        try await Self.withServer { client in
            let received = try await client.serverStreaming(
                request: ClientRequest(message: [30]), descriptor: Self.count, serializer: Bytes(), deserializer: Bytes(),
                options: .defaults
            ) { response in
                var count = 0
                var bytes = 0
                for try await message in response.messages {
                    #expect(message.first == UInt8(count & 0xFF))
                    count += 1
                    bytes += message.count
                }
                return (count, bytes)
            }
            #expect(received.0 == 3000)
            #expect(received.1 == 3000 * 1024)
            let total = try await client.clientStreaming(
                request: StreamingClientRequest(producer: { writer in
                    for _ in 0..<64 { try await writer.write([UInt8](repeating: 9, count: 256 << 10)) }
                }), descriptor: Self.collect, serializer: Bytes(), deserializer: Bytes(), options: .defaults
            ) { response in String(decoding: try response.message, as: UTF8.self) }
            #expect(total == String(64 * (256 << 10)))
        }
    }

    @Test func deadlinesAndCancellationEndCalls() async throws {
        try await Self.withServer { client in
            var options = CallOptions.defaults
            options.timeout = .milliseconds(200)
            // 10,000 messages of 1 KiB, read slowly, outlast the deadline.
            do {
                try await client.serverStreaming(
                    request: ClientRequest(message: [100]), descriptor: Self.count, serializer: Bytes(), deserializer: Bytes(),
                    options: options
                ) { response in
                    for try await _ in response.messages { try await Task.sleep(for: .milliseconds(1)) }
                }
                Issue.record("the call outlived its deadline")
            } catch let error as RPCError {
                #expect([.deadlineExceeded, .cancelled].contains(error.code))
            }
            #expect(try await Self.unary(client, Self.echo, [8]).0 == [8])
        }
    }

    /// Waits up to 5 s for `count` Wait handlers to have been cancelled.
    static func waitForCancelledHandlers(_ count: Int) async throws -> Bool {
        for _ in 0..<500 {
            if waits.withLock({ $0.cancelled }) >= count { return true }
            try await Task.sleep(for: .milliseconds(10))
        }
        return false
    }

    /// A handler waiting for nothing ends when its client goes: by RST_STREAM, or by closing the
    /// connection. Otherwise it would hold its connection's thread for good.
    @Test func handlersOfCallsTheClientAbandonsAreCancelled() async throws {
        let before = Self.waits.withLock { $0.cancelled }
        try await Self.withServer { client, socket in
            let startedBefore = Self.waits.withLock { $0.started }
            let call = Task {
                try await client.serverStreaming(
                    request: ClientRequest(message: []), descriptor: Self.wait, serializer: Bytes(), deserializer: Bytes(),
                    options: .defaults
                ) { response in for try await _ in response.messages {} }
            }
            // Cancelled once its handler runs (a call cancelled sooner never reaches one).
            for _ in 0..<500 where Self.waits.withLock({ $0.started }) < startedBefore + 1 {
                try await Task.sleep(for: .milliseconds(10))
            }
            call.cancel()
            _ = await call.result
            #expect(try await Self.waitForCancelledHandlers(before + 1), "reset stream: handler still waiting")

            // A raw client: preface, SETTINGS, HEADERS for Wait and an empty message; then it hangs up.
            var block: [UInt8] = []
            HPACK.appendIndexed(3, to: &block)  // :method: POST
            HPACK.appendIndexed(6, to: &block)  // :scheme: http
            HPACK.appendLiteral(name: ":path", value: "/test.Echo/Wait", nameIndex: 4, to: &block)
            HPACK.appendLiteral(name: "content-type", value: "application/grpc", nameIndex: 31, to: &block)
            var out = HTTP2.clientPreface
            HTTP2.appendSettings([], to: &out)
            HTTP2.appendHeaders(block, streamID: 1, endStream: false, maxFrameSize: 16384, to: &out)
            HTTP2.appendFrameHeader(length: 5, type: .data, flags: HTTP2.Flags.endStream, streamID: 1, to: &out)
            out += [0, 0, 0, 0, 0]
            let fd = { () -> Int32 in
                let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
                var address = sockaddr_un()
                address.sun_family = sa_family_t(AF_UNIX)
                withUnsafeMutableBytes(of: &address.sun_path) { raw in
                    for (i, byte) in socket.utf8.enumerated() { raw[i] = byte }
                }
                _ = withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
                }
                return fd
            }()
            let started = Self.waits.withLock { $0.started }
            #expect(out.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == out.count)
            for _ in 0..<500 where Self.waits.withLock({ $0.started }) < started + 1 {
                try await Task.sleep(for: .milliseconds(10))
            }
            close(fd)
            #expect(try await Self.waitForCancelledHandlers(before + 2), "lost connection: handler still waiting")
        }
    }

    // MARK: - Direct methods

    /// Echo served directly: the reply says which path served it. Count and Fail directly too.
    static let directMethods: [DirectMethod] = [
        DirectMethod(echo) { request, call in
            let who = call.metadata[stringValues: "x-who"].first(where: { _ in true }) ?? "?"
            try await call.send(Array("direct:\(who):".utf8) + request)
        },
        DirectMethod(count) { request, call in
            for i in 0..<Int(request.first ?? 0) * 100 { try await call.send([UInt8](repeating: UInt8(i & 0xFF), count: 1024)) }
        },
        DirectMethod(fail) { _, _ in
            throw RPCError(code: .notFound, message: "image \"x\": not found")
        },
    ]

    @Test func directMethodsAnswerWithoutTheGeneralPath() async throws {
        try await Self.withServer(directMethods: Self.directMethods) { client, _ in
            var metadata = Metadata()
            metadata.addString("me", forKey: "x-who")
            #expect(try await Self.unary(client, Self.echo, Array("hi".utf8), metadata: metadata).0 == Array("direct:me:hi".utf8))
            // Many at once on one connection.
            try await withThrowingTaskGroup(of: Bool.self) { group in
                for i in 0..<50 {
                    group.addTask { try await Self.unary(client, Self.echo, [UInt8(i)]).0 == Array("direct:?:".utf8) + [UInt8(i)] }
                }
                for try await ok in group { #expect(ok) }
            }
            // A reply larger than the client's window (64 KiB) waits for its credit.
            let received = try await client.serverStreaming(
                request: ClientRequest(message: [3]), descriptor: Self.count, serializer: Bytes(), deserializer: Bytes(),
                options: .defaults
            ) { response in
                var count = 0
                for try await message in response.messages where message.count == 1024 && message.first == UInt8(count & 0xFF) {
                    count += 1
                }
                return count
            }
            #expect(received == 300)
            do {
                _ = try await Self.unary(client, Self.fail, [])
                Issue.record("Fail succeeded")
            } catch let error as RPCError {
                #expect(error.code == .notFound)
                #expect(error.message == "image \"x\": not found")
            }
            // A call with a deadline takes the general path, which enforces it.
            var options = CallOptions.defaults
            options.timeout = .seconds(30)
            let general = try await client.unary(request: ClientRequest(message: Array("hi".utf8)), descriptor: Self.echo,
                                                 serializer: Bytes(), deserializer: Bytes(), options: options) { try $0.message }
            #expect(general == Array("hi".utf8))
            // Methods not served directly still are, through GRPCCore.
            let total = try await client.clientStreaming(
                request: StreamingClientRequest(producer: { writer in try await writer.write([1, 2, 3]) }),
                descriptor: Self.collect, serializer: Bytes(), deserializer: Bytes(), options: .defaults
            ) { response in String(decoding: try response.message, as: UTF8.self) }
            #expect(total == "3")
        }
    }
}
