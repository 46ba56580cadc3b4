import BerthAPI
import BerthCore
import GRPCCore
import Logging
import SwiftProtobuf

/// One component as `ctr plugins ls` shows it, under containerd's plugin type and id.
public struct PluginEntry: Sendable, Filterable {
    public var type: String
    public var id: String
    public var requires: [String]
    public var exports: [String: String]
    public var capabilities: [String]
    public var platforms: [Platform]

    public init(type: String, id: String, requires: [String] = [], exports: [String: String] = [:],
                capabilities: [String] = [], platforms: [Platform] = []) {
        self.type = type
        self.id = id
        self.requires = requires
        self.exports = exports
        self.capabilities = capabilities
        self.platforms = platforms
    }

    public func field(_ path: [String]) -> String? {
        switch path.first {
        case "type": type
        case "id": id
        case "capabilities": capabilities.isEmpty ? nil : capabilities.joined(separator: ",")
        default: nil
        }
    }
}

/// `containerd.services.introspection.v1.Introspection`.
public struct IntrospectionService: Containerd_Services_Introspection_V1_Introspection.SimpleServiceProtocol {
    let plugins: [PluginEntry]
    let uuid: String
    let logger: Logger

    public init(plugins: [PluginEntry], uuid: String, logger: Logger) {
        self.plugins = plugins
        self.uuid = uuid
        self.logger = logger
    }

    public func plugins(request: Containerd_Services_Introspection_V1_PluginsRequest, context: ServerContext) async throws -> Containerd_Services_Introspection_V1_PluginsResponse {
        try await handle(logger, "Introspection/Plugins") {
            let filter = try Filter(parsing: request.filters)
            var response = Containerd_Services_Introspection_V1_PluginsResponse()
            response.plugins = plugins.filter(filter.matches).map { entry in
                var plugin = APIPlugin()
                plugin.type = entry.type
                plugin.id = entry.id
                plugin.requires = entry.requires
                plugin.exports = entry.exports
                plugin.capabilities = entry.capabilities
                plugin.platforms = entry.platforms.map { platform in
                    var p = APIPlatform()
                    p.os = platform.os
                    p.architecture = platform.architecture
                    p.variant = platform.variant ?? ""
                    return p
                }
                return plugin
            }
            return response
        }
    }

    public func server(request: Google_Protobuf_Empty, context: ServerContext) async throws -> Containerd_Services_Introspection_V1_ServerResponse {
        var response = Containerd_Services_Introspection_V1_ServerResponse()
        response.uuid = uuid
        response.pid = UInt64(getpid())
        return response
    }
}

#if canImport(Glibc)
import Glibc
#endif
