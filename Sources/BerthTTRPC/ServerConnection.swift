import BerthCore
import BerthSystem
import Glibc
import Synchronization

/// One accepted connection: a reader thread that decodes frames and starts a thread per request,
/// and a write lock that keeps frames whole.
///
/// The descriptor is closed only when the last reference goes (the reader thread and every
/// handler thread hold one), so a late reply can never land on a reused descriptor number.
final class ServerConnection: Sendable {
    private struct Streams {
        /// The highest request stream ID seen; ttrpc 1.2 refuses one that does not increase.
        var lastStreamID: UInt32 = 0
        /// Streaming calls whose client still sends data frames.
        var open: [UInt32: TTRPCServerStream] = [:]
        var ended = false
    }

    let fd: Int32
    private let server: TTRPCServer
    private let writeLock = Mutex(())
    private let streams = Mutex(Streams())

    init(fd: Int32, server: TTRPCServer) {
        self.fd = fd
        self.server = server
    }

    deinit {
        Glibc.close(fd)
    }

    /// Ends the connection: the reader thread sees end of stream and cleans up.
    func close() {
        UnixSocket.shutdown(fd)
    }

    /// Writes one frame whole. Returns false when the connection is gone.
    @discardableResult
    func send(_ frame: TTRPCFrame) -> Bool {
        let bytes = frame.encoded()
        return writeLock.withLock { _ in UnixSocket.writeAll(fd, bytes) }
    }

    /// Sends a Response; a reply too large for the peer is replaced by `resourceExhausted`.
    @discardableResult
    func sendResponse(_ response: TTRPCResponse, streamID: UInt32) -> Bool {
        var frame = TTRPCFrame(streamID: streamID, type: .response, data: response.encoded())
        do {
            try frame.checkSize()
        } catch {
            frame.data = TTRPCResponse(status: error.status).encoded()
        }
        return send(frame)
    }

    func sendStatus(_ code: TTRPCStatus.Code, _ message: String, streamID: UInt32) {
        sendResponse(TTRPCResponse(status: TTRPCStatus(code: code, message: message)), streamID: streamID)
    }

    // MARK: - Reading

    /// Runs on the connection's own thread until the peer goes or the connection is closed.
    func readLoop() {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16 << 10, alignment: 1)
        defer { buffer.deallocate() }
        var decoder = TTRPCFrameDecoder()
        while true {
            let count = UnixSocket.read(fd, into: buffer)
            guard count > 0 else { break }
            for event in decoder.push(buffer[..<count]) {
                switch event {
                case .frame(let frame):
                    receive(frame)
                case .oversized(let streamID, _, let length):
                    // ttrpc discards the data, answers that stream and keeps the connection.
                    endStream(streamID, with: .messageTooLarge(length))
                    sendResponse(TTRPCResponse(status: TTRPCError.messageTooLarge(length).status), streamID: streamID)
                }
            }
        }
        UnixSocket.shutdown(fd)
        let open = streams.withLock { streams in
            streams.ended = true
            defer { streams.open = [:] }
            return streams.open.values
        }
        for stream in open {
            stream.endInbound(with: .closed)
        }
        server.connectionEnded(self)
    }

    private func receive(_ frame: TTRPCFrame) {
        switch frame.type {
        case .request:
            receiveRequest(frame)
        case .data:
            let stream = streams.withLock { $0.open[frame.streamID] }
            stream?.deliver(frame)
            if frame.flags.contains(.remoteClosed) {
                streams.withLock { _ = $0.open.removeValue(forKey: frame.streamID) }
            }
        default:
            break  // ttrpc ignores frame types it does not know, for future compatibility
        }
    }

    private func receiveRequest(_ frame: TTRPCFrame) {
        let streamID = frame.streamID
        guard streamID % 2 == 1 else {
            sendStatus(.invalidArgument, "StreamID must be odd for client initiated streams", streamID: streamID)
            return
        }
        let increasing = streams.withLock { streams in
            guard streamID > streams.lastStreamID else { return false }
            streams.lastStreamID = streamID
            return true
        }
        guard increasing else {
            sendStatus(.invalidArgument, "StreamID cannot be re-used and must increment", streamID: streamID)
            return
        }
        let receivedAt = MonotonicInstant.now
        let request: TTRPCRequest
        do {
            request = try TTRPCRequest(decoding: frame.data)
        } catch {
            sendStatus(.invalidArgument, "unmarshal request: \(error.message)", streamID: streamID)
            return
        }
        let handler: TTRPCServer.Handler
        switch server.lookup(service: request.service, method: request.method) {
        case .found(let found): handler = found
        case .unknownService:
            sendStatus(.unimplemented, "service \(request.service)", streamID: streamID)
            return
        case .unknownMethod:
            sendStatus(.unimplemented, "method \(request.method)", streamID: streamID)
            return
        }
        guard server.beginRequest() else { return }
        let context = TTRPCContext(request, streamID: streamID, receivedAt: receivedAt)
        let payload = request.payload
        let work: @Sendable () -> Void
        switch handler {
        case .unary(let handler, onConnectionThread: true):
            defer { server.endRequest() }
            runUnary(handler, context: context, payload: payload)
            return
        case .unary(let handler, onConnectionThread: false):
            work = { [self] in
                defer { server.endRequest() }
                runUnary(handler, context: context, payload: payload)
            }
        case .stream(let handler):
            let stream = TTRPCServerStream(streamID: streamID, connection: self, clientSends: frame.flags.contains(.remoteOpen))
            if frame.flags.contains(.remoteOpen) {
                streams.withLock { streams in
                    if streams.ended { stream.endInbound(with: .closed) } else { streams.open[streamID] = stream }
                }
            }
            work = { [self] in
                defer { server.endRequest() }
                runStream(handler, context: context, payload: payload, stream: stream)
            }
        }
        do {
            try spawnThread(name: "ttrpc-call", work)
        } catch {
            server.endRequest()
            endStream(streamID, with: .status(TTRPCStatus(error)))
            sendStatus(.resourceExhausted, error.message, streamID: streamID)
        }
    }

    private func runUnary(_ handler: TTRPCUnaryHandler, context: TTRPCContext, payload: [UInt8]) {
        let response: TTRPCResponse
        do {
            response = TTRPCResponse(payload: try handler(context, payload))
        } catch {
            response = TTRPCResponse(status: TTRPCStatus(from: error))
        }
        sendResponse(response, streamID: context.streamID)
    }

    private func runStream(_ handler: TTRPCStreamHandler, context: TTRPCContext, payload: [UInt8], stream: TTRPCServerStream) {
        do {
            try handler(context, payload, stream)
            send(TTRPCFrame(streamID: context.streamID, type: .data, flags: [.remoteClosed, .noData]))
        } catch {
            sendResponse(TTRPCResponse(status: TTRPCStatus(from: error)), streamID: context.streamID)
        }
        endStream(context.streamID, with: .closed)
    }

    /// Stops routing data frames to a stream and wakes a handler waiting in `receive()`.
    private func endStream(_ streamID: UInt32, with error: TTRPCError) {
        let stream = streams.withLock { $0.open.removeValue(forKey: streamID) }
        stream?.endInbound(with: error)
    }
}
