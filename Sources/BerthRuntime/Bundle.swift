#if canImport(Glibc)
import Glibc
#endif
import BerthCore
import BerthSystem
import Foundation

/// A task's bundle: `<state>/shims/<namespace>/<id>/`, the shim's working directory.
struct Bundle: Sendable {
    let path: String

    init(root: String, namespace: Namespace, id: String) {
        path = "\(root)/\(namespace.name)/\(id)"
    }

    init(path: String) { self.path = path }

    var configPath: String { "\(path)/config.json" }
    var rootfsPath: String { "\(path)/rootfs" }
    var logPath: String { "\(path)/log" }
    var addressPath: String { "\(path)/address" }
    var binaryPathFile: String { "\(path)/shim-binary-path" }

    /// Makes the bundle: its parents 0711, itself 0700, `config.json` with `spec`, `rootfs/`
    /// 0711. A leftover directory of the same name (no live shim uses it) is replaced.
    static func create(root: String, namespace: Namespace, id: String, spec: [UInt8]) throws(BerthError) -> Bundle {
        let bundle = Bundle(root: root, namespace: namespace, id: id)
        try FileSystem.makeDirectories(FileSystem.parentDirectory(of: bundle.path), mode: 0o711)
        if FileSystem.exists(bundle.path) { try bundle.remove() }
        try FileSystem.makeDirectory(bundle.path, mode: 0o700)
        chmod(bundle.path, 0o700)
        do {
            // The state directory does not outlive a reboot, so nothing here needs fsync.
            try FileSystem.writeAtomically(spec, to: bundle.configPath, mode: 0o644, durable: false)
            try FileSystem.makeDirectory(bundle.rootfsPath, mode: 0o711)
            chmod(bundle.rootfsPath, 0o711)
        } catch {
            try? bundle.remove()
            throw error
        }
        return bundle
    }

    /// Records the binary that serves this task, for cleanup after a restart.
    func writeBinaryPath(_ binary: String) throws(BerthError) {
        try FileSystem.writeAtomically(Array(binary.utf8), to: binaryPathFile, mode: 0o600, durable: false)
    }

    /// The recorded shim binary, if any.
    var recordedBinary: String? {
        guard let text = try? FileSystem.readString(binaryPathFile) else { return nil }
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return trimmed.isEmpty ? nil : trimmed
    }

    /// The address the shim wrote, if any.
    var recordedAddress: String? {
        guard let text = try? FileSystem.readString(addressPath) else { return nil }
        let address = ShimAddress.parse(text)
        return address.isEmpty ? nil : address
    }

    /// Removes the bundle. A rootfs still mounted (a shim that died before unmounting) is
    /// unmounted first; the tree is never removed through a mount point.
    func remove() throws(BerthError) {
        if FileSystem.exists(rootfsPath) {
            try? Mounter.unmountAll(rootfsPath)
            if let bundleStatus = FileSystem.status(of: path), let rootfsStatus = FileSystem.status(of: rootfsPath),
               bundleStatus.st_dev != rootfsStatus.st_dev {
                throw .failedPrecondition("bundle \(path): rootfs is still mounted")
            }
        }
        try FileSystem.removeTree(path)
    }
}

/// What a shim prints on `start` and writes to `address`.
enum ShimAddress {
    /// containerd 1.6: the bare address; 1.7 also accepts `{"version":2,"address":…,"protocol":"ttrpc"}`.
    static func parse(_ output: String) -> String {
        let text = output.trimmingCharacters(in: .whitespacesAndNewlines)
        if text.hasPrefix("{"), let data = text.data(using: .utf8),
           let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
           let address = object["address"] as? String {
            return address
        }
        return text
    }
}
