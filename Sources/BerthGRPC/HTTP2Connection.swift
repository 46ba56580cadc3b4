import BerthCore
import BerthSystem
import CBerthSystem
import Glibc
import GRPCCore
import Synchronization

/// One client connection: HTTP/2 on a unix socket, with a thread of its own that reads the
/// socket, writes it, and runs the connection's RPC handlers.
///
/// ## Why a thread that is also an executor
/// Each call's frames are read, its handler runs and its response is written on this one thread:
/// the connection is the handlers' `TaskExecutor` (every RPC task prefers it). A unary call then
/// costs no thread hop at all unless its handler leaves for blocking work (`runBlocking`, the
/// database writer). The thread sleeps in poll(2) on the socket and an eventfd that other threads
/// write to hand it a job or output.
///
/// ## Flow control
/// Inbound: streams start with a window of `streamWindow` and the connection with a much larger
/// one. Credit goes back to the client as the handler reads: while a stream has at most
/// ``creditQueueLimit`` bytes of whole messages queued, everything it received is credited once
/// ``creditThreshold`` bytes have come in, so a message larger than the window still arrives.
/// A handler that stops reading holds the client to `streamWindow` plus that queue.
/// Outbound: DATA respects the client's stream and connection windows (grpc-go starts both at
/// 64 KiB and grows them); a writer whose window is spent, or whose connection has more than
/// ``outputHighWater`` bytes unwritten, suspends until the client reads.
final class HTTP2Connection: TaskExecutor, @unchecked Sendable {
    // @unchecked: the loop-only fields below are touched by the connection's thread alone; shared
    // state lives in `state` and `jobs`, each behind its Mutex.

    struct Limits: Sendable {
        var maxMessageSize = 16 << 20
        var streamWindow = 4 << 20
        var connectionWindow = 1 << 30
        var maxConcurrentStreams = 4096
        /// Advertised as SETTINGS_MAX_HEADER_LIST_SIZE; header blocks are refused beyond 4 times it.
        var maxHeaderListSize = 16 << 10
    }

    static let creditThreshold = 256 << 10
    static let creditQueueLimit = 1 << 20
    static let outputHighWater = 1 << 20

    let fd: Int32
    let limits: Limits
    private let wakeFD: Int32
    private let handler: @Sendable (RPCStream<GRPCUnixTransport.Inbound, GRPCUnixTransport.Outbound>, ServerContext) async -> Void
    /// Methods served without GRPCCore, by `:path`.
    private let directMethods: [String: DirectMethod]
    private let onClosed: @Sendable (HTTP2Connection) -> Void
    private let loopThread = Atomic<UInt>(0)

    // MARK: Shared state

    struct StreamState {
        let inbox: RequestInbox
        let cancellation: ServerContext.RPCCancellationHandle
        var sendWindow: Int
        var headersSent = false
        /// Status sent or stream reset: nothing more goes out.
        var localClosed = false
        /// END_STREAM received or stream reset: nothing more comes in.
        var remoteClosed = false
        /// DATA bytes received and not yet credited back.
        var uncredited = 0
        var deframer = MessageDeframer()
        /// A writer suspended for flow control or output space.
        var writer: UnsafeContinuation<Void, any Error>?
        /// The handler's task, cancelled when the stream is reset or the connection lost:
        /// GRPCCore's cancellation handle only informs, and a handler waiting for events would
        /// otherwise wait (and hold this connection's thread) forever.
        var task: Task<Void, Never>?
    }

    private struct State {
        var streams: [UInt32: StreamState] = [:]
        var connectionSendWindow = HTTP2.defaultWindowSize
        var peerInitialWindow = HTTP2.defaultWindowSize
        var peerMaxFrameSize = HTTP2.defaultMaxFrameSize
        /// Connection-level credit owed to the client.
        var connectionUncredited = 0
        var output: [UInt8] = []
        /// A writer waits for `output` to fall below ``outputHighWater``.
        var outputFull = false
        var lastStreamID: UInt32 = 0
        var goingAway = false
        /// The socket failed or the peer left: every stream is over.
        var broken: RPCError?
    }

    private struct Jobs {
        var queue: [UnownedJob] = []
        var wakePending = false
        /// The thread has exited; late jobs go to the global executor.
        var exited = false
    }

    private let state = Mutex(State())
    private let jobs = Mutex(Jobs())

    // MARK: Loop-only state

    private var readBuffer: [UInt8] = []
    /// Output taken from `state.output`, written from `sendingOffset` on.
    private var sending: [UInt8] = []
    private var sendingOffset = 0
    private var scratch = [UInt8](repeating: 0, count: 64 << 10)
    private var readStart = 0
    private var prefaceSeen = false
    private var decoder = HPACK.Decoder()
    /// A header block being collected across CONTINUATION frames.
    private var pendingHeaders: (streamID: UInt32, endStream: Bool, block: [UInt8])?
    private let peer: String

    init(
        fd: Int32, limits: Limits, peer: String, directMethods: [String: DirectMethod] = [:],
        handler: @escaping @Sendable (RPCStream<GRPCUnixTransport.Inbound, GRPCUnixTransport.Outbound>, ServerContext) async -> Void,
        onClosed: @escaping @Sendable (HTTP2Connection) -> Void
    ) throws(BerthError) {
        let wake = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        guard wake >= 0 else { throw errnoError("eventfd") }
        self.fd = fd
        self.limits = limits
        self.wakeFD = wake
        self.peer = peer
        self.handler = handler
        self.directMethods = directMethods
        self.onClosed = onClosed
    }

    /// Starts the connection's thread: it sends the server's SETTINGS and serves until the client
    /// leaves, the socket fails, or a graceful shutdown has no calls left.
    func start() throws(BerthError) {
        state.withLock { state in
            HTTP2.appendSettings([
                (.maxConcurrentStreams, UInt32(limits.maxConcurrentStreams)),
                (.initialWindowSize, UInt32(limits.streamWindow)),
                (.maxHeaderListSize, UInt32(limits.maxHeaderListSize)),
            ], to: &state.output)
            HTTP2.appendWindowUpdate(streamID: 0, increment: limits.connectionWindow - HTTP2.defaultWindowSize, to: &state.output)
        }
        try spawnThread(name: "grpc-conn") { [self] in run() }
    }

    /// Sends GOAWAY: calls in progress finish, new ones are refused, and the connection closes
    /// once none is left.
    func beginGracefulShutdown() {
        state.withLock { state in
            guard !state.goingAway, state.broken == nil else { return }
            state.goingAway = true
            HTTP2.appendGoAway(lastStreamID: state.lastStreamID, code: .noError, debug: "server shutting down", to: &state.output)
        }
        wake()
    }

    /// Closes the connection at once: every call in progress is cancelled.
    func close(reason: String) {
        fail(RPCError(code: .unavailable, message: reason))
        wake()
    }

    // MARK: TaskExecutor

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let onLoop = isLoopThread
        enum Outcome { case queued(wake: Bool), exited }
        let outcome = jobs.withLock { jobs -> Outcome in
            guard !jobs.exited else { return .exited }
            jobs.queue.append(job)
            guard !onLoop, !jobs.wakePending else { return .queued(wake: false) }
            jobs.wakePending = true
            return .queued(wake: true)
        }
        switch outcome {
        case .queued(let wake): if wake { poke() }
        case .exited: globalConcurrentExecutor.enqueue(ExecutorJob(job))
        }
    }

    private var isLoopThread: Bool { loopThread.load(ordering: .relaxed) == UInt(pthread_self()) }

    /// Makes the thread look at its jobs and output soon; free when called on the thread itself.
    private func wake() {
        guard !isLoopThread else { return }
        let needed = jobs.withLock { jobs -> Bool in
            guard !jobs.wakePending else { return false }
            jobs.wakePending = true
            return true
        }
        if needed { poke() }
    }

    private func poke() {
        var one: UInt64 = 1
        _ = Glibc.write(wakeFD, &one, 8)
    }

    // MARK: The loop

    private func run() {
        loopThread.store(UInt(pthread_self()), ordering: .relaxed)
        var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]
        var socketOpen = true
        while true {
            runJobs()
            if socketOpen { socketOpen = flush() }
            let unsent = hasUnsentOutput
            let (idle, broken, goingAway, drained) = state.withLock { state in
                (state.streams.isEmpty, state.broken != nil, state.goingAway, state.output.isEmpty && !unsent)
            }
            // Over once no call is left and the socket is done with: lost, or drained after GOAWAY.
            if idle && (broken || !socketOpen || (goingAway && drained)) { break }
            if jobs.withLock({ !$0.queue.isEmpty }) { continue }
            if !socketOpen || broken {
                // The socket is finished with; only handlers still running keep the thread.
                socketOpen = false
                fds[0].fd = -1
            }
            fds[0].events = Int16(POLLIN) | (drained ? 0 : Int16(POLLOUT))
            fds[0].revents = 0
            fds[1].revents = 0
            guard poll(&fds, 2, -1) >= 0 else {
                if errno != EINTR { usleep(10_000) }
                continue
            }
            if fds[1].revents != 0 {
                var count: UInt64 = 0
                _ = Glibc.read(wakeFD, &count, 8)
                jobs.withLock { $0.wakePending = false }
            }
            if socketOpen && fds[0].revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 {
                socketOpen = readAndProcess()
            }
        }
        Glibc.close(fd)
        // Jobs that still arrive (none should) run elsewhere.
        let late = jobs.withLock { jobs -> [UnownedJob] in
            jobs.exited = true
            defer { jobs.queue.removeAll() }
            return jobs.queue
        }
        for job in late { globalConcurrentExecutor.enqueue(ExecutorJob(job)) }
        Glibc.close(wakeFD)
        onClosed(self)
    }

    private func runJobs() {
        while true {
            let batch = jobs.withLock { jobs -> [UnownedJob] in
                defer { jobs.queue.removeAll(keepingCapacity: true) }
                return jobs.queue
            }
            if batch.isEmpty { return }
            let executor = asUnownedTaskExecutor()
            for job in batch { job.runSynchronously(on: executor) }
        }
    }

    /// Writes what output there is without blocking. Returns false once the socket has failed.
    /// What the socket does not take stays in `sending`, written from where it stopped.
    private func flush() -> Bool {
        var failed = false
        while true {
            if sendingOffset == sending.count {
                sendingOffset = 0
                sending = state.withLock { state -> [UInt8] in
                    defer { state.output = [] }
                    return state.output
                }
                if sending.isEmpty { break }
            }
            let n = sending.withUnsafeBytes {
                Glibc.send(fd, $0.baseAddress! + sendingOffset, $0.count - sendingOffset, Int32(MSG_NOSIGNAL))
            }
            if n > 0 {
                sendingOffset += n
            } else if n < 0 && errno == EINTR {
                continue
            } else if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                break
            } else {
                failed = true
                break
            }
        }
        if failed {
            fail(RPCError(code: .unavailable, message: "connection lost: \(errnoText(errno))"))
            return false
        }
        // Writers that waited for output space go on; those waiting for a window wait for it.
        let resumed = state.withLock { state -> [UnsafeContinuation<Void, any Error>] in
            guard state.outputFull, state.output.count < Self.outputHighWater else { return [] }
            state.outputFull = false
            return Self.takeWriters(&state)
        }
        for writer in resumed { writer.resume() }
        return true
    }

    /// Whether output is waiting for the socket.
    private var hasUnsentOutput: Bool { sendingOffset < sending.count }

    /// Reads what the socket has and handles every complete frame. Returns false at EOF or on a
    /// connection error (after queueing GOAWAY).
    private func readAndProcess() -> Bool {
        let n = scratch.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        if n > 0 { readBuffer.append(contentsOf: scratch[0..<n]) }
        if n < 0 {
            if errno == EINTR || errno == EAGAIN { return true }
            fail(RPCError(code: .unavailable, message: "connection lost: \(errnoText(errno))"))
            return false
        }
        if n == 0 {
            fail(RPCError(code: .unavailable, message: "client closed the connection"))
            return false
        }
        do {
            try processFrames()
        } catch {
            state.withLock { state in
                HTTP2.appendGoAway(lastStreamID: state.lastStreamID, code: error.code, debug: error.description, to: &state.output)
            }
            _ = flush()
            fail(RPCError(code: .unavailable, message: "HTTP/2 protocol error: \(error.description)"))
            return false
        }
        if readStart > 0 && readStart >= readBuffer.count / 2 {
            readBuffer.removeFirst(readStart)
            readStart = 0
        }
        return true
    }

    private func processFrames() throws(HTTP2.ConnectionError) {
        if !prefaceSeen {
            let preface = HTTP2.clientPreface
            let available = readBuffer.count - readStart
            let compared = min(available, preface.count)
            guard readBuffer[readStart..<readStart + compared].elementsEqual(preface[0..<compared]) else {
                throw HTTP2.ConnectionError(.protocolError, "not an HTTP/2 client preface")
            }
            guard available >= preface.count else { return }
            readStart += preface.count
            prefaceSeen = true
        }
        while readBuffer.count - readStart >= HTTP2.FrameHeader.size {
            let header = HTTP2.FrameHeader(readBuffer[readStart...])
            guard header.length <= HTTP2.defaultMaxFrameSize else {
                throw HTTP2.ConnectionError(.frameSizeError, "frame of \(header.length) bytes")
            }
            guard readBuffer.count - readStart >= HTTP2.FrameHeader.size + header.length else { return }
            let payloadStart = readStart + HTTP2.FrameHeader.size
            let payload = readBuffer[payloadStart..<payloadStart + header.length]
            readStart = payloadStart + header.length
            try handle(header, payload)
        }
    }

    // MARK: Frames

    private func handle(_ header: HTTP2.FrameHeader, _ payload: ArraySlice<UInt8>) throws(HTTP2.ConnectionError) {
        if let pending = pendingHeaders {
            guard header.type == HTTP2.FrameType.continuation.rawValue, header.streamID == pending.streamID else {
                throw HTTP2.ConnectionError(.protocolError, "header block interrupted")
            }
            var block = pending.block
            block.append(contentsOf: payload)
            guard block.count <= limits.maxHeaderListSize * 4 else {
                throw HTTP2.ConnectionError(.enhanceYourCalm, "header block too large")
            }
            if header.has(HTTP2.Flags.endHeaders) {
                pendingHeaders = nil
                try headersComplete(streamID: pending.streamID, endStream: pending.endStream, block: block)
            } else {
                pendingHeaders?.block = block
            }
            return
        }
        guard let type = HTTP2.FrameType(rawValue: header.type) else { return }  // unknown types are ignored (§4.1)
        switch type {
        case .data: try data(header, payload)
        case .headers: try headers(header, payload)
        case .priority:
            guard header.streamID != 0 else { throw HTTP2.ConnectionError(.protocolError, "PRIORITY on stream 0") }
        case .rstStream:
            guard header.streamID != 0, payload.count == 4 else {
                throw HTTP2.ConnectionError(.protocolError, "malformed RST_STREAM")
            }
            reset(header.streamID)
        case .settings: try settings(header, payload)
        case .pushPromise: throw HTTP2.ConnectionError(.protocolError, "PUSH_PROMISE from a client")
        case .ping:
            guard header.streamID == 0, payload.count == 8 else { throw HTTP2.ConnectionError(.protocolError, "malformed PING") }
            if !header.has(HTTP2.Flags.ack) {
                state.withLock { HTTP2.appendPingAck(payload, to: &$0.output) }
            }
        case .goAway:
            break  // the client opens no more streams; those in progress go on
        case .windowUpdate: try windowUpdate(header, payload)
        case .continuation: throw HTTP2.ConnectionError(.protocolError, "CONTINUATION without HEADERS")
        }
    }

    /// The payload without its padding (§6.1, §6.2).
    private func unpadded(_ header: HTTP2.FrameHeader, _ payload: ArraySlice<UInt8>) throws(HTTP2.ConnectionError) -> ArraySlice<UInt8> {
        guard header.has(HTTP2.Flags.padded) else { return payload }
        guard let padLength = payload.first, Int(padLength) < payload.count else {
            throw HTTP2.ConnectionError(.protocolError, "padding longer than the frame")
        }
        return payload[(payload.startIndex + 1)..<(payload.endIndex - Int(padLength))]
    }

    private func headers(_ header: HTTP2.FrameHeader, _ payload: ArraySlice<UInt8>) throws(HTTP2.ConnectionError) {
        guard header.streamID != 0, header.streamID % 2 == 1 else {
            throw HTTP2.ConnectionError(.protocolError, "HEADERS on stream \(header.streamID)")
        }
        var fragment = try unpadded(header, payload)
        if header.has(HTTP2.Flags.priority) {
            guard fragment.count >= 5 else { throw HTTP2.ConnectionError(.protocolError, "short HEADERS priority") }
            fragment = fragment.dropFirst(5)
        }
        if header.has(HTTP2.Flags.endHeaders) {
            try headersComplete(streamID: header.streamID, endStream: header.has(HTTP2.Flags.endStream), block: Array(fragment))
        } else {
            pendingHeaders = (header.streamID, header.has(HTTP2.Flags.endStream), Array(fragment))
        }
    }

    private func headersComplete(streamID: UInt32, endStream: Bool, block: [UInt8]) throws(HTTP2.ConnectionError) {
        let fields: [(name: String, value: String)]
        do {
            fields = try decoder.decode(block)
        } catch {
            throw HTTP2.ConnectionError(.compressionError, error.description)
        }
        enum Opening { case new, trailers(RequestInbox?), refused }
        let opening = state.withLock { state -> Opening in
            if streamID <= state.lastStreamID {
                // Trailers of a stream in progress (gRPC clients send none, but they are legal).
                return .trailers(state.streams[streamID]?.inbox)
            }
            state.lastStreamID = streamID
            return state.goingAway || state.streams.count >= limits.maxConcurrentStreams ? .refused : .new
        }
        switch opening {
        case .trailers(let inbox):
            guard endStream else { throw HTTP2.ConnectionError(.protocolError, "trailers without END_STREAM") }
            guard let inbox else { return }
            endOfInput(streamID, inbox: inbox)
            return
        case .refused:
            state.withLock { HTTP2.appendRSTStream(streamID: streamID, code: .refusedStream, to: &$0.output) }
            return
        case .new:
            break
        }
        openStream(streamID: streamID, endStream: endStream, fields: fields)
    }

    private func openStream(streamID: UInt32, endStream: Bool, fields: [(name: String, value: String)]) {
        var method = "", path = "", contentType = "", encoding = ""
        var hasDeadline = false
        var metadata = Metadata()
        metadata.reserveCapacity(fields.count)
        for (name, value) in fields {
            if name.utf8.first == UInt8(ascii: ":") {
                if name == ":method" { method = value } else if name == ":path" { path = value }
                continue
            }
            if name == "content-type" { contentType = value }
            if name == "grpc-encoding" { encoding = value }
            if name == "grpc-timeout" { hasDeadline = true }
            if name.hasSuffix("-bin") {
                if let bytes = Base64.decode(value) { metadata.addBinary(bytes, forKey: name) } else { metadata.addString(value, forKey: name) }
            } else {
                metadata.addString(value, forKey: name)
            }
        }
        guard contentType.hasPrefix("application/grpc") else {
            // Not gRPC at all: answer in HTTP terms (415), as gRPC servers do.
            state.withLock { state in
                var block: [UInt8] = []
                HPACK.appendLiteral(name: ":status", value: "415", nameIndex: 8, to: &block)
                HTTP2.appendHeaders(block, streamID: streamID, endStream: true, maxFrameSize: state.peerMaxFrameSize, to: &state.output)
            }
            return
        }
        let descriptor: MethodDescriptor
        if method == "POST", let parsed = directMethods[path]?.descriptor ?? Self.parse(path: path) {
            descriptor = parsed
        } else {
            respondWithoutCall(streamID, endStream: endStream, Status(code: .unimplemented, message: "\(method) \(path): not a gRPC method"))
            return
        }
        if !encoding.isEmpty && encoding != "identity" {
            respondWithoutCall(streamID, endStream: endStream, Status(code: .unimplemented, message: "compression \(encoding) is not supported"))
            return
        }
        let inbox = RequestInbox { [weak self] count in self?.consumed(streamID, count) }
        inbox.push(.metadata(metadata))
        let cancellation = ServerContext.RPCCancellationHandle()
        state.withLock { state in
            state.streams[streamID] = StreamState(inbox: inbox, cancellation: cancellation, sendWindow: state.peerInitialWindow)
        }
        if endStream { endOfInput(streamID, inbox: inbox) }
        let context = ServerContext(descriptor: descriptor, remotePeer: peer, localPeer: peer, cancellation: cancellation)
        let handler = self.handler
        // A deadline is GRPCCore's to enforce: such a call takes the general path.
        let direct = hasDeadline ? nil : directMethods[path]
        let task = Task(executorPreference: self) {
            if let direct {
                await self.serve(direct, streamID: streamID, inbox: inbox, metadata: metadata, context: context)
            } else {
                let stream = RPCStream(
                    descriptor: descriptor,
                    inbound: RPCAsyncSequence<RPCRequestPart<[UInt8]>, any Error>(wrapping: inbox),
                    outbound: RPCWriter.Closable(wrapping: ResponseWriter(connection: self, streamID: streamID)))
                await handler(stream, context)
            }
            self.handlerFinished(streamID)
        }
        // A connection lost (closed from another thread) before this point found no task to cancel.
        let cancelled = state.withLock { state -> Bool in
            guard state.streams[streamID] != nil else { return false }
            state.streams[streamID]!.task = task
            return state.broken != nil
        }
        if cancelled { task.cancel() }
    }

    /// Runs a ``DirectMethod`` and ends the stream with its status.
    private func serve(_ method: DirectMethod, streamID: UInt32, inbox: RequestInbox, metadata: Metadata, context: ServerContext) async {
        var status = Status(code: .ok, message: "")
        var trailers: Metadata = [:]
        do {
            let request = try await Self.onlyMessage(of: inbox)
            try await method.serve(request, DirectCall(metadata: metadata, context: context, connection: self, streamID: streamID))
        } catch let error as RPCError {
            status = Status(code: Status.Code(error.code), message: error.message)
            trailers = error.metadata
        } catch {
            status = Status(code: .unknown, message: "\(error)")
        }
        // Fails only when the call is already over (reset, or the connection lost).
        try? await write(.status(status, trailers), streamID: streamID)
    }

    /// The one request message of a unary or server-streaming call.
    private static func onlyMessage(of inbox: RequestInbox) async throws -> [UInt8] {
        var message: [UInt8]?
        while let part = try await inbox.next() {
            guard case .message(let bytes) = part else { continue }
            guard message == nil else {
                throw RPCError(code: .internalError, message: "more than one request message for a single-request method")
            }
            message = bytes
        }
        guard let message else { throw RPCError(code: .internalError, message: "no request message") }
        return message
    }

    /// `/package.Service/Method` into a descriptor.
    static func parse(path: String) -> MethodDescriptor? {
        let parts = path.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0].isEmpty, !parts[1].isEmpty, !parts[2].isEmpty else { return nil }
        return MethodDescriptor(fullyQualifiedService: String(decoding: parts[1], as: UTF8.self),
                                method: String(decoding: parts[2], as: UTF8.self))
    }

    /// Answers a stream that never reaches a handler with a trailers-only response.
    private func respondWithoutCall(_ streamID: UInt32, endStream: Bool, _ status: Status) {
        state.withLock { state in
            var block: [UInt8] = []
            Self.appendStatusBlock(status, metadata: [:], trailersOnly: true, to: &block)
            HTTP2.appendHeaders(block, streamID: streamID, endStream: true, maxFrameSize: state.peerMaxFrameSize, to: &state.output)
            if !endStream { HTTP2.appendRSTStream(streamID: streamID, code: .noError, to: &state.output) }
        }
    }

    private func data(_ header: HTTP2.FrameHeader, _ payload: ArraySlice<UInt8>) throws(HTTP2.ConnectionError) {
        guard header.streamID != 0 else { throw HTTP2.ConnectionError(.protocolError, "DATA on stream 0") }
        let body = try unpadded(header, payload)
        let endStream = header.has(HTTP2.Flags.endStream)
        enum Outcome { case delivered(RequestInbox, [[UInt8]], (any Error)?), dropped }
        let outcome = try state.withLock { state throws(HTTP2.ConnectionError) -> Outcome in
            guard state.streams[header.streamID] != nil, !state.streams[header.streamID]!.remoteClosed else {
                guard header.streamID <= state.lastStreamID else {
                    throw HTTP2.ConnectionError(.protocolError, "DATA on idle stream \(header.streamID)")
                }
                // A stream already over: the bytes only count against the connection.
                state.connectionUncredited += header.length
                Self.creditConnection(&state)
                return .dropped
            }
            var messages: [[UInt8]] = []
            var failure: (any Error)?
            do {
                messages = try state.streams[header.streamID]!.deframer.append(body, maxMessageSize: limits.maxMessageSize)
            } catch {
                failure = error
            }
            state.streams[header.streamID]!.uncredited += header.length
            return .delivered(state.streams[header.streamID]!.inbox, messages, failure)
        }
        guard case .delivered(let inbox, let messages, let failure) = outcome else { return }
        for message in messages { inbox.push(.message(message)) }
        if let failure {
            // The handler reads the error and answers with its status; later DATA is dropped.
            state.withLock { state in
                guard state.streams[header.streamID] != nil else { return }
                Self.closeInput(&state, header.streamID)
            }
            inbox.finish(throwing: failure)
            return
        }
        if endStream { endOfInput(header.streamID, inbox: inbox) }
        consumed(header.streamID, 0)
    }

    /// The client sent END_STREAM: the handler sees the end after the queued messages.
    private func endOfInput(_ streamID: UInt32, inbox: RequestInbox) {
        let complete = state.withLock { state -> Bool in
            guard state.streams[streamID] != nil else { return true }
            Self.closeInput(&state, streamID)
            return state.streams[streamID]!.deframer.isEmpty
        }
        inbox.finish(throwing: complete ? nil : RPCError(code: .internalError, message: "request ended inside a message"))
    }

    /// The stream takes nothing more: what it received and did not credit is the connection's
    /// to credit now.
    private static func closeInput(_ state: inout State, _ streamID: UInt32) {
        state.streams[streamID]!.remoteClosed = true
        state.connectionUncredited += state.streams[streamID]!.uncredited
        state.streams[streamID]!.uncredited = 0
        creditConnection(&state)
    }

    /// Gives the client credit for what a stream received, once its handler keeps up.
    private func consumed(_ streamID: UInt32, _ count: Int) {
        let stream = state.withLock { state in state.streams[streamID].map { ($0.uncredited, $0.inbox) } }
        guard let (uncredited, inbox) = stream, uncredited >= Self.creditThreshold else { return }
        // Read outside the state lock: the inbox has a lock of its own.
        guard inbox.queuedBytes <= Self.creditQueueLimit else { return }
        state.withLock { state in
            guard let uncredited = state.streams[streamID]?.uncredited, uncredited > 0, !state.streams[streamID]!.remoteClosed else { return }
            state.streams[streamID]!.uncredited = 0
            HTTP2.appendWindowUpdate(streamID: streamID, increment: uncredited, to: &state.output)
            state.connectionUncredited += uncredited
            Self.creditConnection(&state)
        }
        wake()
    }

    private static func creditConnection(_ state: inout State) {
        guard state.connectionUncredited >= creditThreshold else { return }
        HTTP2.appendWindowUpdate(streamID: 0, increment: state.connectionUncredited, to: &state.output)
        state.connectionUncredited = 0
    }

    private func settings(_ header: HTTP2.FrameHeader, _ payload: ArraySlice<UInt8>) throws(HTTP2.ConnectionError) {
        guard header.streamID == 0 else { throw HTTP2.ConnectionError(.protocolError, "SETTINGS on a stream") }
        if header.has(HTTP2.Flags.ack) { return }
        guard payload.count % 6 == 0 else { throw HTTP2.ConnectionError(.frameSizeError, "SETTINGS length \(payload.count)") }
        let resumed = try state.withLock { state throws(HTTP2.ConnectionError) -> [UnsafeContinuation<Void, any Error>] in
            for offset in stride(from: payload.startIndex, to: payload.endIndex, by: 6) {
                let identifier = UInt16(payload[offset]) << 8 | UInt16(payload[offset + 1])
                let value = HTTP2.readUInt32(payload, at: offset + 2)
                switch HTTP2.Setting(rawValue: identifier) {
                case .initialWindowSize:
                    guard value <= UInt32(HTTP2.maxWindowSize) else {
                        throw HTTP2.ConnectionError(.flowControlError, "initial window \(value)")
                    }
                    let delta = Int(value) - state.peerInitialWindow
                    state.peerInitialWindow = Int(value)
                    for id in state.streams.keys { state.streams[id]!.sendWindow += delta }
                case .maxFrameSize:
                    guard value >= 16_384, value <= 16_777_215 else {
                        throw HTTP2.ConnectionError(.protocolError, "max frame size \(value)")
                    }
                    state.peerMaxFrameSize = Int(value)
                default:
                    break  // header table size: this end's encoder never indexes; the rest do not bind a server
                }
            }
            HTTP2.appendSettingsAck(to: &state.output)
            return Self.takeWriters(&state)
        }
        for writer in resumed { writer.resume() }
    }

    private func windowUpdate(_ header: HTTP2.FrameHeader, _ payload: ArraySlice<UInt8>) throws(HTTP2.ConnectionError) {
        guard payload.count == 4 else { throw HTTP2.ConnectionError(.frameSizeError, "WINDOW_UPDATE length \(payload.count)") }
        let increment = Int(HTTP2.readUInt32(payload, at: payload.startIndex) & 0x7FFF_FFFF)
        let resumed = try state.withLock { state throws(HTTP2.ConnectionError) -> [UnsafeContinuation<Void, any Error>] in
            if header.streamID == 0 {
                guard increment > 0, state.connectionSendWindow + increment <= HTTP2.maxWindowSize else {
                    throw HTTP2.ConnectionError(.flowControlError, "connection window update by \(increment)")
                }
                state.connectionSendWindow += increment
                return Self.takeWriters(&state)
            }
            guard state.streams[header.streamID] != nil else { return [] }
            state.streams[header.streamID]!.sendWindow += increment
            guard let writer = state.streams[header.streamID]!.writer else { return [] }
            state.streams[header.streamID]!.writer = nil
            return [writer]
        }
        for writer in resumed { writer.resume() }
    }

    /// The client reset a stream: the call is cancelled.
    private func reset(_ streamID: UInt32) {
        let found = state.withLock { state -> (RequestInbox, ServerContext.RPCCancellationHandle, UnsafeContinuation<Void, any Error>?, Task<Void, Never>?)? in
            guard let stream = state.streams[streamID] else { return nil }
            Self.closeInput(&state, streamID)
            state.streams[streamID]!.localClosed = true
            state.streams[streamID]!.writer = nil
            return (stream.inbox, stream.cancellation, stream.writer, stream.task)
        }
        guard let (inbox, cancellation, writer, task) = found else { return }
        let error = RPCError(code: .cancelled, message: "the client cancelled the call")
        inbox.finish(throwing: error)
        writer?.resume(throwing: error)
        cancellation.cancel()
        task?.cancel()
    }

    /// The connection is over: every call is cancelled and every writer fails.
    private func fail(_ error: RPCError) {
        let streams = state.withLock { state -> [StreamState] in
            guard state.broken == nil else { return [] }
            state.broken = error
            var streams: [StreamState] = []
            for id in state.streams.keys {
                streams.append(state.streams[id]!)
                state.streams[id]!.writer = nil
                state.streams[id]!.localClosed = true
                state.streams[id]!.remoteClosed = true
            }
            return streams
        }
        for stream in streams {
            stream.inbox.finish(throwing: error)
            stream.writer?.resume(throwing: error)
            stream.cancellation.cancel()
            stream.task?.cancel()
        }
    }

    private func handlerFinished(_ streamID: UInt32) {
        state.withLock { state in
            guard let stream = state.streams.removeValue(forKey: streamID) else { return }
            if !stream.localClosed && state.broken == nil {
                HTTP2.appendRSTStream(streamID: streamID, code: .internalError, to: &state.output)
            }
            state.connectionUncredited += stream.uncredited
            Self.creditConnection(&state)
        }
        wake()
    }

    private static func takeWriters(_ state: inout State) -> [UnsafeContinuation<Void, any Error>] {
        var writers: [UnsafeContinuation<Void, any Error>] = []
        for id in state.streams.keys {
            if let writer = state.streams[id]!.writer {
                writers.append(writer)
                state.streams[id]!.writer = nil
            }
        }
        return writers
    }

    // MARK: Writing responses

    func write(_ part: RPCResponsePart<[UInt8]>, streamID: UInt32) async throws {
        switch part {
        case .metadata(let metadata):
            try state.withLock { state throws(RPCError) in
                let stream = try Self.liveStream(&state, streamID)
                guard !stream.headersSent else { return }
                Self.appendResponseHeaders(&state, streamID, metadata)
            }
            wake()
        case .message(let message):
            try await writeMessage(message, streamID: streamID)
        case .status(let status, let metadata):
            let inbox = try state.withLock { state throws(RPCError) -> RequestInbox in
                let stream = try Self.liveStream(&state, streamID)
                var block: [UInt8] = []
                Self.appendStatusBlock(status, metadata: metadata, trailersOnly: !stream.headersSent, to: &block)
                HTTP2.appendHeaders(block, streamID: streamID, endStream: true, maxFrameSize: state.peerMaxFrameSize, to: &state.output)
                state.streams[streamID]!.localClosed = true
                if !stream.remoteClosed {
                    // The call is over while the client may still be sending: tell it to stop,
                    // as grpc-go's server does.
                    HTTP2.appendRSTStream(streamID: streamID, code: .noError, to: &state.output)
                    Self.closeInput(&state, streamID)
                }
                return stream.inbox
            }
            inbox.finish()
            wake()
        }
    }

    private func writeMessage(_ message: [UInt8], streamID: UInt32) async throws {
        // gRPC's length prefix: uncompressed, big-endian length.
        let length = UInt32(message.count)
        let prefix: [UInt8] = [0, UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)]
        let total = 5 + message.count
        var sent = 0
        while sent < total {
            let progressed = try state.withLock { state throws(RPCError) -> Bool in
                let stream = try Self.liveStream(&state, streamID)
                if !stream.headersSent { Self.appendResponseHeaders(&state, streamID, [:]) }
                let allowed = min(stream.sendWindow, state.connectionSendWindow, state.peerMaxFrameSize, total - sent)
                guard allowed > 0, state.output.count < Self.outputHighWater else { return false }
                HTTP2.appendFrameHeader(length: allowed, type: .data, flags: 0, streamID: streamID, to: &state.output)
                let chunkEnd = sent + allowed
                if sent < 5 { state.output.append(contentsOf: prefix[sent..<min(5, chunkEnd)]) }
                if chunkEnd > 5 { state.output.append(contentsOf: message[max(sent, 5) - 5..<chunkEnd - 5]) }
                state.streams[streamID]!.sendWindow -= allowed
                state.connectionSendWindow -= allowed
                sent = chunkEnd
                return true
            }
            if progressed {
                wake()
                continue
            }
            try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Void, any Error>) in
                let ready = state.withLock { state -> Result<Void, any Error>? in
                    guard let stream = state.streams[streamID], !stream.localClosed, state.broken == nil else {
                        return .failure(state.broken ?? RPCError(code: .cancelled, message: "the call was cancelled"))
                    }
                    if stream.sendWindow > 0 && state.connectionSendWindow > 0 && state.output.count < Self.outputHighWater {
                        return .success(())
                    }
                    state.streams[streamID]!.writer = continuation
                    if state.output.count >= Self.outputHighWater { state.outputFull = true }
                    return nil
                }
                if let ready { continuation.resume(with: ready) }
            }
            // Output may be waiting for the thread to write it.
            wake()
        }
    }

    func finish(streamID: UInt32, error: (any Error)?) {
        let sent = state.withLock { state -> Bool in
            guard let stream = state.streams[streamID], !stream.localClosed, state.broken == nil else { return false }
            HTTP2.appendRSTStream(streamID: streamID, code: error == nil ? .noError : .internalError, to: &state.output)
            state.streams[streamID]!.localClosed = true
            return true
        }
        if sent { wake() }
    }

    private static func liveStream(_ state: inout State, _ streamID: UInt32) throws(RPCError) -> StreamState {
        if let broken = state.broken { throw broken }
        guard let stream = state.streams[streamID], !stream.localClosed else {
            throw RPCError(code: .cancelled, message: "the call was cancelled")
        }
        return stream
    }

    private static func appendResponseHeaders(_ state: inout State, _ streamID: UInt32, _ metadata: Metadata) {
        var block: [UInt8] = []
        HPACK.appendIndexed(8, to: &block)  // :status: 200
        HPACK.appendLiteral(name: "content-type", value: "application/grpc", nameIndex: 31, to: &block)
        appendMetadata(metadata, to: &block)
        HTTP2.appendHeaders(block, streamID: streamID, endStream: false, maxFrameSize: state.peerMaxFrameSize, to: &state.output)
        state.streams[streamID]!.headersSent = true
    }

    static func appendStatusBlock(_ status: Status, metadata: Metadata, trailersOnly: Bool, to block: inout [UInt8]) {
        if trailersOnly {
            HPACK.appendIndexed(8, to: &block)
            HPACK.appendLiteral(name: "content-type", value: "application/grpc", nameIndex: 31, to: &block)
        }
        HPACK.appendLiteral(name: "grpc-status", value: String(status.code.rawValue), to: &block)
        if !status.message.isEmpty {
            HPACK.appendLiteral(name: "grpc-message", value: percentEncoded(status.message), to: &block)
        }
        appendMetadata(metadata, to: &block)
    }

    private static func appendMetadata(_ metadata: Metadata, to block: inout [UInt8]) {
        for (key, value) in metadata {
            let name = key.lowercased()
            // Reserved names are the transport's to write.
            if name.utf8.first == UInt8(ascii: ":") || name == "content-type" || name == "grpc-status" || name == "grpc-message" {
                continue
            }
            switch value {
            case .string(let string): HPACK.appendLiteral(name: name, value: string, to: &block)
            case .binary(let bytes): HPACK.appendLiteral(name: name, value: Base64.encode(bytes), to: &block)
            }
        }
    }

    /// grpc-message's encoding: bytes outside printable ASCII, and '%', as %XX.
    static func percentEncoded(_ message: String) -> String {
        let hex = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(message.utf8.count)
        for byte in message.utf8 {
            if byte >= 0x20 && byte <= 0x7E && byte != UInt8(ascii: "%") {
                out.append(byte)
            } else {
                out.append(UInt8(ascii: "%"))
                out.append(hex[Int(byte >> 4)])
                out.append(hex[Int(byte & 0xF)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// The outbound half of one RPC, as GRPCCore writes it.
struct ResponseWriter: ClosableRPCWriterProtocol {
    typealias Element = RPCResponsePart<[UInt8]>
    let connection: HTTP2Connection
    let streamID: UInt32

    func write(_ element: Element) async throws {
        try await connection.write(element, streamID: streamID)
    }

    func write(contentsOf elements: some Sequence<Element>) async throws {
        for element in elements { try await write(element) }
    }

    func finish() async {
        connection.finish(streamID: streamID, error: nil)
    }

    func finish(throwing error: any Error) async {
        connection.finish(streamID: streamID, error: error)
    }
}

/// Splits a stream's DATA into gRPC messages: a flag byte (compressed or not), a 4-byte
/// big-endian length, the message.
///
/// A message spread over many frames (a 1 MiB `Content/Write` comes in 64 of 16 KiB) is gathered
/// by appending each frame once; it is copied out when complete.
struct MessageDeframer {
    private var buffer: [UInt8] = []

    var isEmpty: Bool { buffer.isEmpty }

    mutating func append(_ bytes: ArraySlice<UInt8>, maxMessageSize: Int) throws(RPCError) -> [[UInt8]] {
        var messages: [[UInt8]] = []
        if buffer.isEmpty {
            // The common case, whole messages in one frame, needs no buffering.
            let rest = try Self.split(bytes, maxMessageSize: maxMessageSize, into: &messages)
            buffer.append(contentsOf: rest)
            return messages
        }
        buffer.append(contentsOf: bytes)
        // Nothing to split until the message the buffer starts with is complete.
        if buffer.count >= 5 {
            let length = Self.length(buffer[...])
            guard length <= maxMessageSize else { throw Self.tooLarge(length, maxMessageSize) }
            guard buffer.count >= 5 + length else { return messages }
        } else {
            return messages
        }
        let rest = try Self.split(buffer[...], maxMessageSize: maxMessageSize, into: &messages)
        buffer = Array(rest)
        return messages
    }

    /// Appends the complete messages at the start of `input` to `messages`; returns the rest.
    private static func split(_ input: ArraySlice<UInt8>, maxMessageSize: Int, into messages: inout [[UInt8]]) throws(RPCError) -> ArraySlice<UInt8> {
        var input = input
        while input.count >= 5 {
            let start = input.startIndex
            guard input[start] == 0 else {
                throw RPCError(code: .unimplemented, message: "compressed messages are not supported")
            }
            let length = Self.length(input)
            guard length <= maxMessageSize else { throw tooLarge(length, maxMessageSize) }
            guard input.count >= 5 + length else { break }
            messages.append(Array(input[(start + 5)..<(start + 5 + length)]))
            input = input[(start + 5 + length)...]
        }
        return input
    }

    private static func length(_ input: ArraySlice<UInt8>) -> Int {
        let start = input.startIndex
        return Int(input[start + 1]) << 24 | Int(input[start + 2]) << 16 | Int(input[start + 3]) << 8 | Int(input[start + 4])
    }

    private static func tooLarge(_ length: Int, _ limit: Int) -> RPCError {
        RPCError(code: .resourceExhausted, message: "message of \(length) bytes is larger than the limit of \(limit)")
    }
}
