import BerthAPI
import BerthTestSupport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import SwiftProtobuf
import Synchronization
import Testing

/// A gRPC client connected to a berthd's unix socket, for the calls ctr cannot make.
typealias APIClient = GRPCClient<HTTP2ClientTransport.Posix>

/// Connects a client to `socket` (plaintext HTTP/2 over a unix socket), runs `body` with it, and
/// shuts the client down afterwards whether `body` returns or throws.
func withAPIClient<T: Sendable>(_ socket: String, _ body: (APIClient) async throws -> T) async throws -> T {
    let transport = try HTTP2ClientTransport.Posix(target: .unixDomainSocket(path: socket), transportSecurity: .plaintext)
    let client = GRPCClient(transport: transport)
    return try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await client.runConnections() }
        defer { client.beginGracefulShutdown() }
        let result = try await body(client)
        client.beginGracefulShutdown()
        try await group.waitForAll()
        return result
    }
}

/// Starts a berthd and runs `body` with it and a client connected to it.
func withDaemonAndClient<T: Sendable>(_ body: (DaemonProcess, APIClient) async throws -> T) async throws -> T {
    try await withDaemon { daemon in
        try await withAPIClient(daemon.socket) { client in try await body(daemon, client) }
    }
}

/// Call metadata naming the containerd namespace, as every containerd client sends it.
func ns(_ name: String) -> Metadata {
    var metadata = Metadata()
    metadata.addString(name, forKey: "containerd-namespace")
    return metadata
}

/// Call metadata naming a namespace and the lease that holds what the call creates.
func ns(_ name: String, lease: String) -> Metadata {
    var metadata = ns(name)
    metadata.addString(lease, forKey: "containerd-lease")
    return metadata
}

/// Expects `body` to fail with an `RPCError` of `code` whose message contains each of `words`.
func expectRPCError<T>(_ code: RPCError.Code, _ words: String..., sourceLocation: SourceLocation = #_sourceLocation,
                       _ body: () async throws -> T) async {
    do {
        let value = try await body()
        Issue.record("expected \(code), got a result: \(value)", sourceLocation: sourceLocation)
    } catch let error as RPCError {
        #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
        for word in words {
            #expect(error.message.contains(word), "message \"\(error.message)\" lacks \"\(word)\"", sourceLocation: sourceLocation)
        }
    } catch {
        Issue.record("expected an RPCError \(code), got \(error)", sourceLocation: sourceLocation)
    }
}

// MARK: Content writes

/// One side of a `Content/Write` stream: send requests, read the one-for-one replies.
final class WriteSession {
    private let requests: AsyncStream<APIWriteContentRequest>.Continuation
    private var responses: RPCAsyncSequence<APIWriteContentResponse, any Error>.AsyncIterator

    init(requests: AsyncStream<APIWriteContentRequest>.Continuation,
         responses: RPCAsyncSequence<APIWriteContentResponse, any Error>.AsyncIterator) {
        self.requests = requests
        self.responses = responses
    }

    /// Sends `request` and waits for its reply; throws the stream's `RPCError` if it fails.
    func send(_ request: APIWriteContentRequest) async throws -> APIWriteContentResponse {
        requests.yield(request)
        guard let reply = try await responses.next() else {
            throw TestSupportError.failed("Write stream ended without a reply to \(request.action)")
        }
        return reply
    }
}

/// Opens a `Content/Write` stream with `metadata` and runs `body` with it; the stream is
/// half-closed when `body` returns.
func withWriteStream<T: Sendable>(_ client: APIClient, metadata: Metadata,
                                  _ body: @escaping @Sendable (WriteSession) async throws -> T) async throws -> T {
    let (stream, continuation) = AsyncStream.makeStream(of: APIWriteContentRequest.self)
    let content = Containerd_Services_Content_V1_Content.Client(wrapping: client)
    return try await content.write(metadata: metadata, requestProducer: { writer in
        for await request in stream { try await writer.write(request) }
    }, onResponse: { response in
        defer { continuation.finish() }
        return try await body(WriteSession(requests: continuation, responses: response.messages.makeAsyncIterator()))
    })
}

func writeRequest(_ action: APIWriteAction, ref: String, offset: Int64 = 0, data: Data = Data(), total: Int64 = 0,
                  expected: String = "") -> APIWriteContentRequest {
    var request = APIWriteContentRequest()
    request.action = action
    request.ref = ref
    request.offset = offset
    request.data = data
    request.total = total
    request.expected = expected
    return request
}

/// Writes and commits `data` under `ref` in 1 MiB pieces; returns the committed digest.
@discardableResult
func writeBlob(_ client: APIClient, metadata: Metadata, ref: String, data: Data, expected: String = "") async throws -> String {
    try await withWriteStream(client, metadata: metadata) { session in
        var offset = 0
        let piece = 1 << 20
        while data.count - offset > piece {
            let reply = try await session.send(writeRequest(.write, ref: ref, offset: Int64(offset),
                                                            data: data.subdata(in: offset..<offset + piece)))
            offset += piece
            guard reply.offset == Int64(offset) else { throw TestSupportError.failed("write reply at \(reply.offset), not \(offset)") }
        }
        let reply = try await session.send(writeRequest(.commit, ref: ref, offset: Int64(offset), data: data.subdata(in: offset..<data.count),
                                                        total: Int64(data.count), expected: expected))
        return reply.digest
    }
}

/// `count` random bytes and their sha256 digest (from sha256sum, which the test hosts have).
func randomBlob(in directory: String, count: Int) throws -> (data: Data, digest: String) {
    let file = try ContentTests.randomFile(in: directory, size: count)
    let data = try Data(contentsOf: URL(fileURLWithPath: file.path))
    try? FileManager.default.removeItem(atPath: file.path)
    return (data, file.digest)
}

// MARK: Events

/// Envelopes a subscription has received so far.
final class EventLog: Sendable {
    private let envelopes = Mutex<[APIEnvelope]>([])

    func append(_ envelope: APIEnvelope) { envelopes.withLock { $0.append(envelope) } }
    var all: [APIEnvelope] { envelopes.withLock { $0 } }

    /// Waits until `predicate` holds for what has arrived; false on timeout.
    func wait(for timeout: Duration = .seconds(5), until predicate: ([APIEnvelope]) -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if predicate(all) { return true }
            try await Task.sleep(for: .milliseconds(10))
        }
        return predicate(all)
    }

    /// Repeats `probe` until an envelope matching `arrived` comes in: the subscription is then
    /// surely registered on the daemon, which has no other way of saying so.
    func synchronize(_ probe: () async throws -> Void, until arrived: (APIEnvelope) -> Bool) async throws {
        for _ in 0..<200 {
            try await probe()
            if try await wait(for: .milliseconds(25), until: { $0.contains(where: arrived) }) { return }
        }
        throw TestSupportError.timeout("the subscription never saw a probe event")
    }
}

/// Subscribes with `filters` and runs `body` while the subscription collects envelopes; the
/// subscription is cancelled when `body` finishes.
func withSubscription<T: Sendable>(_ client: APIClient, filters: [String], metadata: Metadata = ns("default"),
                                   _ body: (EventLog) async throws -> T) async throws -> T {
    let log = EventLog()
    let events = Containerd_Services_Events_V1_Events.Client(wrapping: client)
    var subscribe = Containerd_Services_Events_V1_SubscribeRequest()
    subscribe.filters = filters
    let request = subscribe
    return try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask {
            try await events.subscribe(request, metadata: metadata) { response in
                for try await envelope in response.messages { log.append(envelope) }
            }
        }
        defer { group.cancelAll() }
        let result = try await body(log)
        group.cancelAll()
        return result
    }
}
