import BerthCore
import CBerthSystem
import Glibc

/// Performs the mounts snapshotters describe (`bind`, `overlay`, and plain file systems), and
/// undoes them. Root only.
public enum Mounter {
    /// Mounts `mounts` one over the other at `target`, an existing directory. On failure, what
    /// was mounted is unmounted again. Throws `invalidArgument` for an unknown mount type or a
    /// bad option, `internal` with the kernel's reason otherwise.
    public static func mount(_ mounts: [Mount], at target: String) throws(BerthError) {
        var done = 0
        do {
            for mount in mounts {
                try self.mount(mount, at: target)
                done += 1
            }
        } catch {
            for _ in 0..<done { _ = umount2(target, Int32(MNT_DETACH)) }
            throw error
        }
    }

    static func mount(_ mount: Mount, at target: String) throws(BerthError) {
        var flags: UInt = 0
        var data: [String] = []
        for option in mount.options {
            switch option {
            case "ro": flags |= UInt(MS_RDONLY)
            case "rw": flags &= ~UInt(MS_RDONLY)
            case "bind": flags |= UInt(MS_BIND)
            case "rbind": flags |= UInt(MS_BIND | MS_REC)
            case "nosuid": flags |= UInt(MS_NOSUID)
            case "nodev": flags |= UInt(MS_NODEV)
            case "noexec": flags |= UInt(MS_NOEXEC)
            case "noatime": flags |= UInt(MS_NOATIME)
            case "relatime": flags |= UInt(MS_RELATIME)
            case "sync": flags |= UInt(MS_SYNCHRONOUS)
            case "remount": flags |= UInt(MS_REMOUNT)
            case "private": flags |= UInt(MS_PRIVATE)
            case "rprivate": flags |= UInt(MS_PRIVATE | MS_REC)
            case "defaults": break
            default: data.append(option)
            }
        }
        let isBind = mount.type == "bind" || flags & UInt(MS_BIND) != 0
        if isBind { flags |= UInt(MS_BIND) }
        let type = isBind ? "none" : mount.type
        let options = data.joined(separator: ",")
        guard options.utf8.count < Int(getpagesize()) else {
            // mount(2) takes at most a page of options; a long overlay chain goes layer by layer.
            guard mount.type == "overlay" else {
                throw .invalidArgument("mount \(mount.type) at \(target): options longer than a page (\(options.utf8.count) bytes)")
            }
            return try mountOverlayByLayers(data, readOnly: flags & UInt(MS_RDONLY) != 0, at: target)
        }
        guard Glibc.mount(mount.source, target, type, flags, isBind ? nil : options) == 0 else {
            throw errnoError("mount \(mount.type) \(mount.source) at \(target)")
        }
        // A bind mount ignores MS_RDONLY, MS_NOSUID, MS_NODEV and MS_NOEXEC until remounted
        // with them, as containerd does.
        let perMountFlags = flags & UInt(MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_RELATIME)
        if isBind, perMountFlags != 0 {
            guard Glibc.mount("none", target, nil, UInt(MS_REMOUNT | MS_BIND) | perMountFlags, nil) == 0 else {
                let error = errnoError("remount bind mount \(target) with \(mount.options.joined(separator: ","))")
                _ = umount2(target, Int32(MNT_DETACH))
                throw error
            }
        }
    }

    /// Mounts an overlay through fsopen/fsconfig, passing each lower directory on its own
    /// (`lowerdir+`, Linux 6.8+), so chains of any length mount.
    static func mountOverlayByLayers(_ options: [String], readOnly: Bool, at target: String) throws(BerthError) {
        let fs = cberth_fsopen("overlay", UInt32(CBERTH_FSOPEN_CLOEXEC))
        guard fs >= 0 else { throw errnoError("overlay at \(target): fsopen") }
        defer { close(fs) }
        func set(_ key: String, _ value: String?) throws(BerthError) {
            let result = value.map { cberth_fsconfig(fs, UInt32(CBERTH_FSCONFIG_SET_STRING), key, $0, 0) }
                ?? cberth_fsconfig(fs, UInt32(CBERTH_FSCONFIG_SET_FLAG), key, nil, 0)
            guard result == 0 else { throw errnoError("overlay at \(target): option \(key)") }
        }
        for option in options {
            let parts = option.split(separator: "=", maxSplits: 1).map(String.init)
            if parts[0] == "lowerdir", parts.count == 2 {
                for lower in parts[1].split(separator: ":") { try set("lowerdir+", String(lower)) }
            } else {
                try set(parts[0], parts.count == 2 ? parts[1] : nil)
            }
        }
        guard cberth_fsconfig(fs, UInt32(CBERTH_FSCONFIG_CMD_CREATE), nil, nil, 0) == 0 else {
            throw errnoError("overlay at \(target): create")
        }
        let mountFD = cberth_fsmount(fs, UInt32(CBERTH_FSMOUNT_CLOEXEC), readOnly ? UInt32(CBERTH_MOUNT_ATTR_RDONLY) : 0)
        guard mountFD >= 0 else { throw errnoError("overlay at \(target): fsmount") }
        defer { close(mountFD) }
        guard cberth_move_mount(mountFD, "", AT_FDCWD, target, UInt32(CBERTH_MOVE_MOUNT_F_EMPTY_PATH)) == 0 else {
            throw errnoError("overlay at \(target): move_mount")
        }
    }

    /// Unmounts everything mounted at `target` (each layer of a stack); lazily if busy.
    public static func unmountAll(_ target: String) throws(BerthError) {
        while true {
            if umount2(target, 0) == 0 { continue }
            switch errno {
            case EINVAL, ENOENT: return   // not a mount point (any more)
            case EBUSY:
                guard umount2(target, Int32(MNT_DETACH)) == 0 else { throw errnoError("unmount \(target)") }
            default:
                throw errnoError("unmount \(target)")
            }
        }
    }

    /// Mounts `mounts` on a fresh temporary directory under `parent`, runs `body` with its path,
    /// then unmounts and removes the directory, also when `body` throws.
    public static func withTemporaryMount<T>(_ mounts: [Mount], under parent: String,
                                             _ body: (String) throws(BerthError) -> T) throws(BerthError) -> T {
        var template = Array("\(parent)/mount-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw errnoError("temporary mount point in \(parent)")
        }
        let target = String(cString: made)
        defer { rmdir(target) }
        try mount(mounts, at: target)
        defer { try? unmountAll(target) }
        return try body(target)
    }
}
