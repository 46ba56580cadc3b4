import BerthCore
import BerthSystem
import BerthTestSupport
import CBerthSystem
import Foundation
import Testing
@testable import BerthArchive

@Suite("Whiteouts")
struct WhiteoutTests {
    func base(_ root: String) throws {
        try apply(try tarBytes([.dir("etc"), .file("etc/keep", "k"), .file("etc/gone", "g"), .dir("var"),
                                .dir("var/cache"), .file("var/cache/a", "a"), .dir("var/cache/sub"),
                                .file("var/cache/sub/b", "b"), .dir("opt"), .file("opt/old", "o")]), to: root)
    }

    @Test("delete mode removes whited-out files and directories, and empties opaque directories of older entries")
    func deleteMode() throws {
        let scratch = try Scratch("wh-delete")
        defer { scratch.cleanup() }
        let root = try scratch.sub("root")
        try base(root)
        try apply(try tarBytes([.file("etc/.wh.gone"), .file(".wh.var"), .dir("opt"), .file("opt/new", "n"),
                                .file("opt/.wh..wh..opq"), .file("opt/newer", "nn"), .file(".wh.never-existed")]), to: root)
        #expect(!exists("\(root)/etc/gone"))
        #expect(readText("\(root)/etc/keep") == "k")
        #expect(!exists("\(root)/var"))
        // The opaque marker removed what was there before, not what this layer wrote (before or after it).
        #expect(FileSystem.list("\(root)/opt").sorted() == ["new", "newer"])
        #expect(!exists("\(root)/.wh.never-existed") && !exists("\(root)/opt/.wh..wh..opq"))
    }

    @Test("overlay mode makes 0/0 character devices and trusted.overlay.opaque")
    func overlayMode() throws {
        let scratch = try Scratch("wh-overlay")
        defer { scratch.cleanup() }
        let upper = try scratch.sub("upper")
        try apply(try tarBytes([.dir("etc"), .file("etc/.wh.gone"), .file(".wh.var"), .dir("opt"), .file("opt/.wh..wh..opq"),
                                .file("opt/new", "n")]), to: upper, options: ApplyOptions(whiteouts: .overlay))
        for path in ["etc/gone", "var"] {
            let st = try #require(lstatPath("\(upper)/\(path)"))
            #expect(st.st_mode & S_IFMT == S_IFCHR)
            #expect(cberth_major(st.st_rdev) == 0 && cberth_minor(st.st_rdev) == 0)
        }
        #expect(xattr("\(upper)/opt", "trusted.overlay.opaque") == Array("y".utf8))
        #expect(FileSystem.list("\(upper)/opt") == ["new"])
    }

    @Test("overlay mode gives created parents the attributes of the topmost lower that has them")
    func overlayParents() throws {
        let scratch = try Scratch("wh-parents")
        defer { scratch.cleanup() }
        let lower1 = try scratch.sub("l1")
        let lower2 = try scratch.sub("l2")
        try apply(try tarBytes([.dir("a", mode: 0o750, uid: 11, gid: 12, mtime: 1_000_000), .dir("a/b", mode: 0o701, uid: 13, gid: 14, mtime: 2_000_000)]), to: lower2)
        try apply(try tarBytes([.dir("a", mode: 0o711, uid: 21, gid: 22, mtime: 3_000_000)]), to: lower1)
        try setXattr("\(lower1)/a", "user.from", "l1")
        let upper = try scratch.sub("upper")
        try apply(try tarBytes([.file("a/b/c/file", "x")]), to: upper,
                  options: ApplyOptions(whiteouts: .overlay, lowerDirectories: [lower1, lower2]))
        let a = try #require(lstatPath("\(upper)/a"))
        #expect(a.st_mode & 0o7777 == 0o711 && a.st_uid == 21 && a.st_gid == 22 && a.st_mtim.tv_sec == 3_000_000)
        #expect(xattr("\(upper)/a", "user.from") == Array("l1".utf8))
        let b = try #require(lstatPath("\(upper)/a/b"))
        #expect(b.st_mode & 0o7777 == 0o701 && b.st_uid == 13 && b.st_mtim.tv_sec == 2_000_000)
        let c = try #require(lstatPath("\(upper)/a/b/c"))
        #expect(c.st_mode & 0o7777 == 0o755 && c.st_uid == 0)
    }

    @Test("a real overlay mount of two applied layers shows the merged view")
    func overlayMount() throws {
        let scratch = try Scratch("wh-mount")
        defer { scratch.cleanup() }
        let l1 = try scratch.sub("l1")
        let l2 = try scratch.sub("l2")
        let work = try scratch.sub("work")
        let merged = try scratch.sub("merged")
        try base(l1)
        try apply(try tarBytes([.file("etc/.wh.gone"), .file(".wh.var"), .dir("opt"), .file("opt/.wh..wh..opq"),
                                .file("opt/new", "n"), .file("etc/added", "added"), .file("newdir/x", "x")]),
                  to: l2, options: ApplyOptions(whiteouts: .overlay, lowerDirectories: [l1]))
        _ = try sh("mount -t overlay overlay -o lowerdir=\(l1),upperdir=\(l2),workdir=\(work) \(merged)")
        defer { _ = try? Command.run(["umount", merged]) }
        #expect(FileSystem.list(merged).sorted() == ["etc", "newdir", "opt"])
        #expect(FileSystem.list("\(merged)/etc").sorted() == ["added", "keep"])
        #expect(FileSystem.list("\(merged)/opt") == ["new"])
        #expect(readText("\(merged)/etc/keep") == "k")
        #expect(readText("\(merged)/newdir/x") == "x")
    }
}
