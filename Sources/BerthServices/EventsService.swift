import BerthAPI
import BerthCore
import GRPCCore
import Logging
import SwiftProtobuf

/// `containerd.services.events.v1.Events`.
public struct EventsService: Containerd_Services_Events_V1_Events.SimpleServiceProtocol {
    let bus: EventBus
    let logger: Logger

    public init(bus: EventBus, logger: Logger) {
        self.bus = bus
        self.logger = logger
    }

    /// containerd's topic rule: starts with `/`, and every `/`-separated component is an identifier.
    static func validateTopic(_ topic: String) throws(BerthError) {
        guard !topic.isEmpty else { throw .invalidArgument("topic must not be empty") }
        guard topic.hasPrefix("/") else { throw .invalidArgument("topic \(quoted(topic)): must start with '/'") }
        guard topic.count > 1 else { throw .invalidArgument("topic \(quoted(topic)): must have at least one component") }
        for component in topic.dropFirst().split(separator: "/", omittingEmptySubsequences: false) {
            try Identifier.validate(String(component), field: "topic \(quoted(topic)) component")
        }
    }

    public func publish(request: Containerd_Services_Events_V1_PublishRequest, context: ServerContext) async throws -> Google_Protobuf_Empty {
        try await handle(logger, "Events/Publish") {
            let namespace = try RequestContext.currentNamespace()
            try Self.validateTopic(request.topic)
            var envelope = APIEnvelope()
            envelope.timestamp = .init(Timestamp.now)
            envelope.namespace = namespace.name
            envelope.topic = request.topic
            envelope.event = request.event
            bus.forward(envelope)
            return Google_Protobuf_Empty()
        }
    }

    public func forward(request: Containerd_Services_Events_V1_ForwardRequest, context: ServerContext) async throws -> Google_Protobuf_Empty {
        try await handle(logger, "Events/Forward") {
            _ = try Namespace(request.envelope.namespace)
            try Self.validateTopic(request.envelope.topic)
            guard request.envelope.hasTimestamp else {
                throw BerthError.invalidArgument("timestamp must be set on forwarded event")
            }
            bus.forward(request.envelope)
            return Google_Protobuf_Empty()
        }
    }

    public func subscribe(request: Containerd_Services_Events_V1_SubscribeRequest, response: RPCWriter<APIEnvelope>, context: ServerContext) async throws {
        try await handle(logger, "Events/Subscribe") {
            let filter = try Filter(parsing: request.filters)
            for await envelope in bus.subscribe(filter: filter) {
                try await response.write(envelope)
            }
        }
    }
}
