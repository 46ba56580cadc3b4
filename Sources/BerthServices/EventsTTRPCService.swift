import BerthAPI
import BerthCore
import BerthTTRPC
import Logging
import SwiftProtobuf

/// `containerd.services.events.ttrpc.v1.Events/Forward` on berthd's ttrpc socket
/// (`<address>.ttrpc`): where runtime v2 shims (Berth's and containerd's alike) publish task
/// events. The envelope is checked as `Events/Forward` over gRPC checks it, then delivered to the
/// event bus, so `ctr events` and `Events/Subscribe` see shim events as they see the daemon's own.
public struct EventsTTRPCService: Sendable {
    public static let service = "containerd.services.events.ttrpc.v1.Events"

    let bus: EventBus
    let logger: Logger

    public init(bus: EventBus, logger: Logger) {
        self.bus = bus
        self.logger = logger
    }

    /// Registers `Forward` on `server`; it runs on the connection's thread (it only decodes,
    /// checks and hands the event to the bus, which never blocks).
    public func register(on server: TTRPCServer) {
        server.register(service: Self.service, method: "Forward", onConnectionThread: true) { [bus, logger] _, payload in
            let request: Containerd_Services_Events_Ttrpc_V1_ForwardRequest
            do {
                request = try .init(serializedBytes: payload)
            } catch {
                throw BerthError.invalidArgument("forward request: \(error)")
            }
            let envelope = request.envelope
            _ = try Namespace(envelope.namespace)
            try EventsService.validateTopic(envelope.topic)
            guard envelope.hasTimestamp else {
                throw BerthError.invalidArgument("timestamp must be set on forwarded event")
            }
            var forwarded = APIEnvelope()
            forwarded.timestamp = envelope.timestamp
            forwarded.namespace = envelope.namespace
            forwarded.topic = envelope.topic
            forwarded.event = envelope.event
            logger.debug("shim event", metadata: ["topic": "\(envelope.topic)", "namespace": "\(envelope.namespace)"])
            bus.forward(forwarded)
            return []
        }
    }
}
