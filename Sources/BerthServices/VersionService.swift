import BerthAPI
import GRPCCore
import SwiftProtobuf

/// `containerd.services.version.v1.Version`.
public struct VersionService: Containerd_Services_Version_V1_Version.SimpleServiceProtocol {
    public static let version = "0.1.0"
    let revision: String

    public init(revision: String) { self.revision = revision }

    public func version(request: Google_Protobuf_Empty, context: ServerContext) async throws -> Containerd_Services_Version_V1_VersionResponse {
        var response = Containerd_Services_Version_V1_VersionResponse()
        response.version = Self.version
        response.revision = revision
        return response
    }
}
