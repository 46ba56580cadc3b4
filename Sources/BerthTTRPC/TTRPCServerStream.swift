import BerthSystem
/// The server's side of one streaming call (ttrpc 1.2).
///
/// The handler sends messages as Data frames with ``send(_:)``; the server ends the stream when
/// the handler returns. When the client opened the stream with `remoteOpen`, it sends messages
/// too, which ``receive(until:)`` returns in order.
public final class TTRPCServerStream: Sendable {
    private struct Inbound {
        var messages: [[UInt8]] = []
        var finished = false
        var error: TTRPCError?
    }

    /// The stream's ID (odd, chosen by the client).
    public let streamID: UInt32
    private let connection: ServerConnection
    private let inbound: ConditionLock<Inbound>

    init(streamID: UInt32, connection: ServerConnection, clientSends: Bool) {
        self.streamID = streamID
        self.connection = connection
        self.inbound = ConditionLock(Inbound(finished: !clientSends))
    }

    /// Sends one message to the client as a Data frame.
    ///
    /// - Throws: ``TTRPCError/closed`` when the connection is gone; `resourceExhausted` when the
    ///   message is over 4 MiB.
    public func send(_ message: [UInt8]) throws(TTRPCError) {
        let frame = TTRPCFrame(streamID: streamID, type: .data, data: message)
        try frame.checkSize()
        guard connection.send(frame) else { throw .closed }
    }

    /// The client's next message, waiting for it; nil once the client has closed its side (or
    /// never opened it). A `deadline` that passes also yields nil.
    ///
    /// - Throws: ``TTRPCError/closed`` when the connection went first; `resourceExhausted` when
    ///   the client sent a message over 4 MiB (the stream is then over).
    public func receive(until deadline: MonotonicInstant? = nil) throws(TTRPCError) -> [UInt8]? {
        let next: Result<[UInt8]?, TTRPCError>? = inbound.wait(until: deadline) { inbound in
            if !inbound.messages.isEmpty { return .success(inbound.messages.removeFirst()) }
            if let error = inbound.error { return .failure(error) }
            return inbound.finished ? .success(nil) : nil
        }
        return try next?.get() ?? nil
    }

    func deliver(_ frame: TTRPCFrame) {
        inbound.update { inbound in
            guard !inbound.finished else { return }
            if !frame.flags.contains(.noData) { inbound.messages.append(frame.data) }
            if frame.flags.contains(.remoteClosed) { inbound.finished = true }
        }
    }

    /// No more messages will come: a stream ended normally stays quiet, one cut off reports `error`.
    func endInbound(with error: TTRPCError) {
        inbound.update { inbound in
            guard !inbound.finished else { return }
            inbound.finished = true
            inbound.error = error
        }
    }
}
