import NIOCore

/// Answers a client's HTTP/2 PINGs in front of swift-nio-http2, so that grpc-go's BDP pings do not
/// trip nio-http2's control-frame rate limit.
///
/// ## Why
/// grpc-go (Debian's `ctr` 1.6.20 carries 1.33.3) sends a PING each time it receives DATA, to
/// estimate the bandwidth-delay product: about one per MiB during `ctr content ingest` and one per
/// `Read` RPC during `ctr content get`. swift-nio-http2 counts inbound PING/SETTINGS/PRIORITY
/// frames and answers the 201st within 30 s with GOAWAY(ENHANCE_YOUR_CALM), so any upload over
/// ~200 MiB is cut off. grpc-swift-nio-transport builds `NIOHTTP2Handler` itself and does not
/// expose that limit, so this handler sits first in each connection's pipeline, in front of the
/// whole gRPC pipeline, and answers the PINGs it can vouch for before nio-http2 sees them.
///
/// ## What it does
/// Inbound bytes pass through unchanged and in order, except for the PING frames it answers,
/// which it cuts out of the stream:
/// - the 24-byte client connection preface passes through untouched;
/// - after it, the handler walks 9-byte frame headers (RFC 9113 §4.1) and lets each frame's
///   payload stream through as it arrives. Only a frame header split across reads, or a PING
///   frame split across reads, is buffered (at most 16 bytes);
/// - a non-ACK PING (type 6, length 8, stream 0) is answered with a PING ACK carrying the same 8
///   opaque bytes (RFC 9113 §6.7), written at the end of the read and flushed in
///   `channelReadComplete`. Such a PING is never forwarded, so nio-http2 and grpc-swift's
///   keepalive policing never see it.
///
/// Everything else — SETTINGS, PING ACKs (replies to the server's own keepalive and
/// graceful-shutdown PINGs), malformed PINGs, a PING that arrives before the client's first frame
/// or in the middle of a header block — is forwarded, so nio-http2 keeps enforcing the protocol.
///
/// ## Flood guard
/// Answering every PING would turn off nio-http2's protection against PING floods. The guard
/// follows grpc-go's own server policy (ping strikes are reset whenever the server sends data):
/// - a PING is answered if the server wrote anything (any outbound write passed this handler)
///   since the previous PING this handler answered. A legitimate BDP ping always follows data
///   from the server, so these are never limited; `ctr content get` sends ~1,700/s of them;
/// - otherwise it is answered only while a token bucket (``Budget``, 1000/s by default) has a
///   token left;
/// - nothing is answered while the channel is not writable, so a peer that does not read cannot
///   make the server queue PING ACKs;
/// - a PING that is not answered is forwarded unchanged, so nio-http2's limit (and grpc-swift's
///   ping strikes) still apply to it: a flood still gets GOAWAY(ENHANCE_YOUR_CALM).
///
/// Forwarded PINGs make nio-http2 write ACKs, which count as server writes; a flood therefore
/// alternates between answered and forwarded PINGs at read granularity, and still reaches
/// nio-http2's limit at about half the rate.
///
/// ## Ordering
/// The ACK is written with `context.write` at the head of the pipeline. nio-http2 writes each
/// frame as one or two synchronous `write` calls on the event loop, and this handler only writes
/// from `channelRead`, after its forwarded bytes have been processed, so an ACK can never land
/// between a frame's header and its payload.
///
/// - Note: The handler is not `Sendable`; like every NIO handler it lives on its channel's event
///   loop.
public final class PingResponder: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = IOData
    public typealias OutboundOut = IOData

    /// How many PINGs the handler answers on its own when the server has written nothing since
    /// the previous answered PING: a token bucket of `burst` tokens refilled at `perSecond`.
    public struct Budget: Sendable, Hashable {
        /// Tokens added per second.
        public let perSecond: Int
        /// Bucket size: how many such PINGs can be answered in a row after a quiet period.
        public let burst: Int

        /// Values below 1 are raised to 1.
        public init(perSecond: Int, burst: Int) {
            self.perSecond = max(1, perSecond)
            self.burst = max(1, burst)
        }

        /// 1000 PINGs per second, with a burst of 1000.
        public static let `default` = Budget(perSecond: 1000, burst: 1000)
    }

    /// HTTP/2 wire constants (RFC 9113).
    private enum Wire {
        /// "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", the client connection preface.
        static let prefaceLength = 24
        static let frameHeaderLength = 9
        static let pingPayloadLength = 8
        static let pingFrameLength = frameHeaderLength + pingPayloadLength

        static let typeHeaders: UInt8 = 0x1
        static let typePushPromise: UInt8 = 0x5
        static let typePing: UInt8 = 0x6
        static let typeContinuation: UInt8 = 0x9

        static let flagAck: UInt8 = 0x1
        static let flagEndHeaders: UInt8 = 0x4
    }

    /// A parsed 9-byte frame header.
    private struct FrameHeader {
        var length: Int
        var type: UInt8
        var flags: UInt8
        var streamID: UInt32

        /// Reads a header at `index`; the caller guarantees 9 readable bytes there.
        init(_ buffer: ByteBuffer, at index: Int) {
            let high = Int(buffer.getInteger(at: index, as: UInt8.self)!)
            let low = Int(buffer.getInteger(at: index + 1, as: UInt16.self)!)
            self.length = high << 16 | low
            self.type = buffer.getInteger(at: index + 3, as: UInt8.self)!
            self.flags = buffer.getInteger(at: index + 4, as: UInt8.self)!
            self.streamID = buffer.getInteger(at: index + 5, as: UInt32.self)! & 0x7fff_ffff
        }

        /// A client PING that expects an ACK, well-formed per RFC 9113 §6.7.
        var isPingRequest: Bool {
            type == Wire.typePing && flags & Wire.flagAck == 0
                && length == Wire.pingPayloadLength && streamID == 0
        }
    }

    // MARK: Configuration

    private let budget: Budget
    private let now: () -> NIODeadline
    /// Nanoseconds of refill that buy one token.
    private let nanosecondsPerToken: Int64
    private let bucketCapacity: Int64

    // MARK: Parser state

    /// Bytes of the client preface still to pass through.
    private var prefaceRemaining = Wire.prefaceLength
    /// Payload bytes of the current (forwarded) frame still to pass through.
    private var payloadRemaining = 0
    /// The start of a frame header, or of a whole PING frame, that was split across reads.
    /// `nil` while the parser is not holding anything (the common case: no allocation).
    private var pending: ByteBuffer?
    /// Whether the client's first frame (its SETTINGS) has been forwarded: PINGs are intercepted
    /// only after it, so nio-http2 still rejects a connection that does not start properly.
    private var sawFirstFrame = false
    /// Whether a HEADERS or PUSH_PROMISE block is open (awaiting CONTINUATION). A PING inside one
    /// is a protocol error that nio-http2 must see, so it is forwarded.
    private var inHeaderBlock = false

    // MARK: Guard and output state

    /// Whether any outbound write passed this handler since the last PING it answered.
    private var serverWroteSinceLastAnswer = false
    /// Token bucket content, in nanoseconds of refill (one token = `nanosecondsPerToken`).
    private var bucketCredit: Int64
    private var bucketUpdated: NIODeadline
    /// ACKs collected during one `channelRead`, written at its end.
    private var acks: ByteBuffer?
    /// Whether ACKs were written since the last flush.
    private var needsFlush = false
    /// Set once the channel went inactive or the handler was removed: stop parsing.
    private var isDone = false

    /// Creates a handler for one connection.
    ///
    /// - Parameters:
    ///   - budget: PINGs answered without intervening server writes.
    ///   - now: The clock for the budget; tests pass a manual one.
    public init(budget: Budget = .default, now: @escaping () -> NIODeadline = NIODeadline.now) {
        self.budget = budget
        self.now = now
        self.nanosecondsPerToken = max(1, 1_000_000_000 / Int64(budget.perSecond))
        self.bucketCapacity = Int64(budget.burst) * self.nanosecondsPerToken
        self.bucketCredit = self.bucketCapacity
        self.bucketUpdated = now()
    }

    // MARK: Inbound

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let input = Self.unwrapInboundIn(data)
        guard !isDone else {
            context.fireChannelRead(data)
            return
        }
        // `cursor` walks the input; `runStart..<cursor` is the stretch to forward as one slice.
        // Only indices at or after the reader index are ever read: ByteBuffer's `get*` return nil
        // for bytes already read past.
        var cursor = input.readerIndex
        let end = input.writerIndex
        var runStart = cursor

        if prefaceRemaining > 0 {
            let n = min(prefaceRemaining, end - cursor)
            prefaceRemaining -= n
            cursor += n
        }

        if pending != nil {
            // A header (or PING) split across reads: finish it first. The preface is complete
            // here, so nothing from this read is queued ahead of it.
            guard completePending(context: context, input: input, cursor: &cursor) else {
                // Still incomplete: the whole read went into `pending`.
                writeAcks(context: context)
                return
            }
            runStart = cursor
        }

        while cursor < end, !isDone {
            if payloadRemaining > 0 {
                let n = min(payloadRemaining, end - cursor)
                payloadRemaining -= n
                cursor += n
                continue
            }
            // At a frame boundary.
            let available = end - cursor
            guard available >= Wire.frameHeaderLength else {
                stash(input, from: cursor, count: available)
                break
            }
            let header = FrameHeader(input, at: cursor)
            guard interceptable(header) else {
                forwardHeader(header)
                cursor += Wire.frameHeaderLength
                continue
            }
            guard available >= Wire.pingFrameLength else {
                stash(input, from: cursor, count: available)
                break
            }
            if shouldAnswer(context: context) {
                // Forward what precedes the PING, then drop the PING from the stream.
                forward(context: context, input, from: runStart, to: cursor)
                appendAck(context: context, input, payloadAt: cursor + Wire.frameHeaderLength)
                cursor += Wire.pingFrameLength
                runStart = cursor
            } else {
                cursor += Wire.pingFrameLength
            }
        }

        // Forward the rest of the run; bytes past `cursor` (if any) were stashed.
        forward(context: context, input, from: runStart, to: cursor)
        writeAcks(context: context)
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        if needsFlush {
            needsFlush = false
            // This flushes everything queued on the channel, including writes that grpc-swift's
            // flush coalescing is holding back; harmless, and only when a PING was answered.
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    public func channelInactive(context: ChannelHandlerContext) {
        isDone = true
        pending = nil
        acks = nil
        context.fireChannelInactive()
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        isDone = true
        // Hand on anything still held so no byte is lost.
        if let held = pending, held.readableBytes > 0 {
            pending = nil
            context.fireChannelRead(Self.wrapInboundOut(held))
        }
    }

    // MARK: Outbound

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        serverWroteSinceLastAnswer = true
        context.write(data, promise: promise)
    }

    // MARK: Parsing helpers

    /// Whether a frame with this header is a PING the handler may answer itself.
    private func interceptable(_ header: FrameHeader) -> Bool {
        sawFirstFrame && !inHeaderBlock && header.isPingRequest
    }

    /// Records a frame that is forwarded: its payload follows, and header-block state moves on.
    private func forwardHeader(_ header: FrameHeader) {
        sawFirstFrame = true
        payloadRemaining = header.length
        switch header.type {
        case Wire.typeHeaders, Wire.typePushPromise, Wire.typeContinuation:
            inHeaderBlock = header.flags & Wire.flagEndHeaders == 0
        default:
            break
        }
    }

    /// Keeps the tail of a read that ends inside a frame header or PING frame.
    private func stash(_ input: ByteBuffer, from index: Int, count: Int) {
        guard count > 0 else { return }
        var held = ByteBufferAllocator().buffer(capacity: Wire.pingFrameLength)
        held.writeImmutableBuffer(input.getSlice(at: index, length: count)!)
        pending = held
    }

    /// Tops `pending` up from `input` and handles it once it holds a whole header (or, for a
    /// PING, a whole frame). Returns false if `input` ran out first.
    private func completePending(
        context: ChannelHandlerContext, input: ByteBuffer, cursor: inout Int
    ) -> Bool {
        guard var held = pending else { return true }
        let end = input.writerIndex

        func topUp(to size: Int) -> Bool {
            let n = min(size - held.readableBytes, end - cursor)
            if n > 0 {
                held.writeImmutableBuffer(input.getSlice(at: cursor, length: n)!)
                cursor += n
            }
            return held.readableBytes >= size
        }

        guard topUp(to: Wire.frameHeaderLength) else {
            pending = held
            return false
        }
        let header = FrameHeader(held, at: held.readerIndex)
        if interceptable(header) {
            guard topUp(to: Wire.pingFrameLength) else {
                pending = held
                return false
            }
            pending = nil
            if shouldAnswer(context: context) {
                appendAck(context: context, held, payloadAt: held.readerIndex + Wire.frameHeaderLength)
            } else {
                context.fireChannelRead(Self.wrapInboundOut(held))
            }
        } else {
            pending = nil
            forwardHeader(header)
            context.fireChannelRead(Self.wrapInboundOut(held))
        }
        return true
    }

    /// Forwards `input[from..<to]` if non-empty.
    private func forward(context: ChannelHandlerContext, _ input: ByteBuffer, from: Int, to: Int) {
        guard to > from, !isDone else { return }
        if from == input.readerIndex && to == input.writerIndex {
            context.fireChannelRead(Self.wrapInboundOut(input))
        } else {
            context.fireChannelRead(Self.wrapInboundOut(input.getSlice(at: from, length: to - from)!))
        }
    }

    // MARK: Answering

    /// The flood guard: decides whether to answer the PING at hand, consuming budget if needed.
    private func shouldAnswer(context: ChannelHandlerContext) -> Bool {
        guard context.channel.isWritable else { return false }
        if serverWroteSinceLastAnswer {
            serverWroteSinceLastAnswer = false
            return true
        }
        return takeToken()
    }

    private func takeToken() -> Bool {
        let time = now()
        let elapsed = max(0, (time - bucketUpdated).nanoseconds)
        bucketUpdated = time
        bucketCredit = min(bucketCapacity, bucketCredit &+ elapsed)
        guard bucketCredit >= nanosecondsPerToken else { return false }
        bucketCredit -= nanosecondsPerToken
        return true
    }

    /// Adds a PING ACK echoing the 8 bytes at `payloadAt` to this read's outgoing ACKs.
    private func appendAck(context: ChannelHandlerContext, _ source: ByteBuffer, payloadAt index: Int) {
        let opaque = source.getInteger(at: index, as: UInt64.self)!
        if acks == nil {
            acks = context.channel.allocator.buffer(capacity: Wire.pingFrameLength)
        }
        // Length 8 (24 bits), type PING, flags ACK, stream 0, then the opaque data.
        acks!.writeInteger(UInt8(0))
        acks!.writeInteger(UInt16(Wire.pingPayloadLength))
        acks!.writeInteger(Wire.typePing)
        acks!.writeInteger(Wire.flagAck)
        acks!.writeInteger(UInt32(0))
        acks!.writeInteger(opaque)
    }

    /// Writes the ACKs collected in this read; `channelReadComplete` flushes them.
    private func writeAcks(context: ChannelHandlerContext) {
        guard let out = acks else { return }
        acks = nil
        guard !isDone else { return }
        needsFlush = true
        context.write(Self.wrapOutboundOut(.byteBuffer(out)), promise: nil)
    }
}

@available(*, unavailable)
extension PingResponder: Sendable {}
