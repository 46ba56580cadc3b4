import BerthCore
import BerthSystem
import TOMLKit

/// berthd's configuration: containerd's keys where the concept is shared.
///
/// Built-in defaults serve without a file; a file overrides what it names; flags override both.
public struct Config: Sendable, Equatable {
    public var version = 2
    public var root = "/var/lib/berth"
    public var state = "/run/berth"
    public var grpc = GRPC()
    public var debug = Debug()
    /// How often garbage is collected when no deletion asks for it sooner.
    public var gcInterval: Duration = .seconds(600)
    /// Runtime name → the shim that serves it (`[runtimes."io.containerd.runc.v2"] shim = …`).
    public var runtimes: [String: Runtime] = [:]

    public struct Runtime: Sendable, Equatable {
        /// The shim binary: an absolute path, or a name looked up on PATH.
        public var shim: String

        public init(shim: String) { self.shim = shim }
    }

    public struct GRPC: Sendable, Equatable {
        public var address = "/run/berth/berthd.sock"
        public var uid: UInt32 = 0
        public var gid: UInt32 = 0
        public var maxRecvMessageSize = 16 << 20
        public var maxSendMessageSize = 16 << 20
    }

    public struct Debug: Sendable, Equatable {
        public var level = "info"
    }

    public static let defaultPath = "/etc/berth/config.toml"

    public init() {}

    /// Loads `path`; a missing file at the default path is fine, elsewhere it is an error.
    public static func load(path: String?) throws(BerthError) -> Config {
        let path = path ?? defaultPath
        guard FileSystem.exists(path) else {
            if path == defaultPath { return Config() }
            throw .notFound("config file \(path): not found")
        }
        return try parse(try FileSystem.readString(path), source: path)
    }

    public static func parse(_ text: String, source: String = "config") throws(BerthError) -> Config {
        let file: File
        do {
            file = try TOMLDecoder().decode(File.self, from: text)
        } catch {
            throw .invalidArgument("\(source): \(error)")
        }
        var config = Config()
        if let version = file.version {
            guard version == 2 else { throw .invalidArgument("\(source): unsupported config version \(version), expected 2") }
        }
        if let root = file.root { config.root = root }
        if let state = file.state { config.state = state }
        if let grpc = file.grpc {
            if let address = grpc.address { config.grpc.address = address }
            if let uid = grpc.uid { config.grpc.uid = uid }
            if let gid = grpc.gid { config.grpc.gid = gid }
            if let size = grpc.max_recv_message_size { config.grpc.maxRecvMessageSize = size }
            if let size = grpc.max_send_message_size { config.grpc.maxSendMessageSize = size }
        }
        if let level = file.debug?.level { config.debug.level = level }
        for (name, runtime) in file.runtimes ?? [:] {
            guard let shim = runtime.shim, !shim.isEmpty else {
                throw .invalidArgument("\(source): runtimes.\(quoted(name)): shim must be set")
            }
            config.runtimes[name] = Runtime(shim: shim)
        }
        for path in [config.root, config.state] where !path.hasPrefix("/") {
            throw .invalidArgument("\(source): root and state must be absolute paths, got \(quoted(path))")
        }
        return config
    }

    /// The file's shape; every key optional so a file names only what it changes.
    struct File: Decodable {
        var version: Int?
        var root: String?
        var state: String?
        var grpc: GRPCFile?
        var debug: DebugFile?
        var runtimes: [String: RuntimeFile]?

        struct RuntimeFile: Decodable {
            var shim: String?
        }

        struct GRPCFile: Decodable {
            var address: String?
            var uid: UInt32?
            var gid: UInt32?
            var max_recv_message_size: Int?
            var max_send_message_size: Int?
        }

        struct DebugFile: Decodable {
            var level: String?
        }
    }

    /// What `berthd config default` prints: the defaults, commented.
    public static var defaultText: String {
        let d = Config()
        return """
        # berthd configuration. Keys follow containerd's where the concept is shared.
        version = 2

        # Persistent data: content blobs, the metadata database, snapshots.
        root = "\(d.root)"
        # Runtime state: sockets, shim state. Lost on reboot.
        state = "\(d.state)"

        [grpc]
          # Unix socket serving containerd's API (ctr --address).
          address = "\(d.grpc.address)"
          # Owner of the socket; its mode is 0660.
          uid = \(d.grpc.uid)
          gid = \(d.grpc.gid)
          max_recv_message_size = \(d.grpc.maxRecvMessageSize)
          max_send_message_size = \(d.grpc.maxSendMessageSize)

        [debug]
          # trace, debug, info, warn (warning), error
          level = "\(d.debug.level)"

        # Runtime v2 shims. A task's runtime name picks its shim: a name listed here uses that
        # binary (an absolute path, or a name looked up on PATH); io.containerd.runc.v2 and
        # io.containerd.runc.v1 otherwise use berth-shim (next to berthd, else on PATH); an
        # absolute path is used as is; any other io.containerd.<name>.<version> runs
        # containerd-shim-<name>-<version> from PATH, as containerd does. For example, to run
        # containers with containerd's own runc shim:
        #
        # [runtimes."io.containerd.runc.v2"]
        #   shim = "/usr/bin/containerd-shim-runc-v2"

        """
    }
}
