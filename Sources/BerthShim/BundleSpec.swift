import BerthCore

/// The few facts the shim reads from a bundle's `config.json` (the OCI runtime spec).
public struct BundleSpec: Sendable, Hashable {
    /// `linux.cgroupsPath`, empty when unset.
    public var cgroupsPath = ""
    /// True unless the spec creates a private PID namespace (a `pid` namespace without a path);
    /// then the shim kills everything left in the container when its init exits, as
    /// containerd's `ShouldKillAllOnExit` does.
    public var killAllOnExit = true
    /// `annotations`.
    public var annotations: [String: String] = [:]

    public init() {}

    /// Parses `config.json` bytes.
    ///
    /// - Throws: `BerthError.invalidArgument` for malformed JSON.
    public init(json bytes: [UInt8]) throws(BerthError) {
        let spec = try JSONValue(parsing: bytes)
        cgroupsPath = spec["linux"]?["cgroupsPath"]?.stringValue ?? ""
        for namespace in spec["linux"]?["namespaces"]?.arrayValue ?? [] {
            if namespace["type"]?.stringValue == "pid", (namespace["path"]?.stringValue ?? "").isEmpty {
                killAllOnExit = false
            }
        }
        for (key, value) in spec["annotations"]?.objectValue ?? [:] {
            if let text = value.stringValue { annotations[key] = text }
        }
    }

    /// Reads `<bundle>/config.json`; a missing file gives the defaults.
    public static func load(bundle: String) throws(BerthError) -> BundleSpec {
        guard let bytes = readFile(bundle + "/config.json") else { return BundleSpec() }
        return try BundleSpec(json: bytes)
    }

    /// The shim group: the first of the grouping annotations, else the container id.
    public func groupID(default id: String) -> String {
        for key in ["io.containerd.runc.v2.group", "io.kubernetes.cri.sandbox-id"] {
            if let group = annotations[key], !group.isEmpty { return group }
        }
        return id
    }
}
