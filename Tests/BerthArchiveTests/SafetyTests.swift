import BerthCore
import BerthSystem
import BerthTestSupport
import Foundation
import Testing
@testable import BerthArchive

/// Hostile archives: nothing may be written, linked, changed or removed outside the root.
/// Each test keeps a sentinel directory beside the root and checks it is untouched.
@Suite("Apply safety")
struct SafetyTests {
    struct Fixture {
        let scratch: Scratch
        let root: String
        let sentinel: String
        init() throws {
            scratch = try Scratch("safety")
            root = try scratch.sub("root")
            sentinel = try scratch.sub("sentinel")
            try FileSystem.writeAtomically(Array("original".utf8), to: "\(sentinel)/passwd")
        }
        func expectSentinelUntouched(sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(FileSystem.list(sentinel) == ["passwd"], sourceLocation: sourceLocation)
            #expect(readText("\(sentinel)/passwd") == "original", sourceLocation: sourceLocation)
            #expect(lstatPath("\(sentinel)/passwd")!.st_mode & 0o777 == 0o644, sourceLocation: sourceLocation)
            #expect(FileSystem.list(scratch.path).sorted() == ["root", "sentinel"], sourceLocation: sourceLocation)
        }
    }

    @Test("names climbing out with .. are rejected, naming the entry", arguments: ["../x", "a/../../x", "./../sentinel/passwd", "a/b/../../../sentinel/passwd"])
    func dotDot(name: String) throws {
        let f = try Fixture()
        defer { f.scratch.cleanup() }
        expectError(.invalidArgument, [name, "climbs out"]) { try apply(try tarBytes([.file(name, "evil")]), to: f.root) }
        f.expectSentinelUntouched()
    }

    @Test("absolute names land inside the root")
    func absolute() throws {
        let f = try Fixture()
        defer { f.scratch.cleanup() }
        try apply(try tarBytes([.file("/etc/x", "inside"), .file("/\(f.sentinel)/passwd", "contained")]), to: f.root)
        #expect(readText("\(f.root)/etc/x") == "inside")
        #expect(readText("\(f.root)\(f.sentinel)/passwd") == "contained")
        f.expectSentinelUntouched()
    }

    @Test("entries below a symlink pointing out resolve inside the root", arguments: ["/", "../../..", "/../..", "/tmp/../../.."])
    func symlinkParent(target: String) throws {
        let f = try Fixture()
        defer { f.scratch.cleanup() }
        let sentinelName = String(f.sentinel.split(separator: "/").last!)
        let parentOfRoot = String(f.scratch.path.dropFirst())
        try apply(try tarBytes([.symlink("evil", target), .file("evil/etc/passwd", "contained"),
                                .file("evil/\(parentOfRoot)/\(sentinelName)/passwd", "contained too"),
                                .file("evil/../\(sentinelName)/passwd", "lexical")]), to: f.root)
        // Whatever the symlink says, the kernel resolved it as if the root were "/".
        #expect(readText("\(f.root)/etc/passwd") == "contained")
        #expect(readText("\(f.root)/\(parentOfRoot)/\(sentinelName)/passwd") == "contained too")
        #expect(readText("\(f.root)/\(sentinelName)/passwd") == "lexical")
        f.expectSentinelUntouched()
    }

    @Test("a file written at a symlink's own path replaces the symlink instead of following it")
    func replaceSymlink() throws {
        let f = try Fixture()
        defer { f.scratch.cleanup() }
        try apply(try tarBytes([.symlink("link", "\(f.sentinel)/passwd"), .file("link", "replaced")]), to: f.root)
        #expect(lstatPath("\(f.root)/link")!.st_mode & S_IFMT == S_IFREG)
        #expect(readText("\(f.root)/link") == "replaced")
        // Same with a second layer, and for a directory, a device and a hardlink at the symlink's path.
        try apply(try tarBytes([.symlink("d", f.sentinel), .symlink("n", "\(f.sentinel)/passwd"),
                                .symlink("h", "\(f.sentinel)/passwd")]), to: f.root)
        try apply(try tarBytes([.dir("d", mode: 0o700), .node("n", .fifo), .hardlink("h", "link")]), to: f.root)
        #expect(lstatPath("\(f.root)/d")!.st_mode & S_IFMT == S_IFDIR)
        #expect(lstatPath("\(f.root)/n")!.st_mode & S_IFMT == S_IFIFO)
        #expect(readText("\(f.root)/h") == "replaced")
        f.expectSentinelUntouched()
    }

    @Test("hardlink targets: climbing out rejected, absolute and symlinked ones resolved inside, missing or directory rejected")
    func hardlinks() throws {
        let f = try Fixture()
        defer { f.scratch.cleanup() }
        expectError(.invalidArgument, ["h1", "climbs out"]) {
            try apply(try tarBytes([.hardlink("h1", "../../etc/passwd")]), to: f.root)
        }
        expectError(.invalidArgument, ["h2", "does not exist"]) {
            try apply(try tarBytes([.hardlink("h2", "/etc/passwd")]), to: f.root)
        }
        expectError(.invalidArgument, ["h3", "does not exist"]) {
            try apply(try tarBytes([.hardlink("h3", "\(f.sentinel)/passwd")]), to: f.root)
        }
        expectError(.invalidArgument, ["h4", "is a directory"]) {
            try apply(try tarBytes([.dir("somedir"), .hardlink("h4", "somedir")]), to: f.root)
        }
        // /etc/passwd names the root's own etc/passwd.
        // A target through a symlink to outside resolves inside the root, where it does not exist.
        expectError(.invalidArgument, ["h6", "does not exist"]) {
            try apply(try tarBytes([.symlink("out", f.sentinel), .hardlink("h6", "out/passwd")]), to: f.root)
        }
        try apply(try tarBytes([.file("etc/passwd", "root's own"), .hardlink("h5", "/etc/passwd")]), to: f.root)
        #expect(readText("\(f.root)/h5") == "root's own")
        #expect(lstatPath("\(f.root)/h5")!.st_ino == lstatPath("\(f.root)/etc/passwd")!.st_ino)
        f.expectSentinelUntouched()
        #expect(!exists("\(f.root)/h6"))
    }

    @Test("hardlink through a symlinked parent resolves inside the root")
    func hardlinkSymlinkParent() throws {
        let f = try Fixture()
        defer { f.scratch.cleanup() }
        let sentinelName = String(f.sentinel.split(separator: "/").last!)
        try apply(try tarBytes([.dir(sentinelName), .file("\(sentinelName)/passwd", "inner"), .symlink("up", "../../.."),
                                .hardlink("h", "up/\(sentinelName)/passwd")]), to: f.root)
        #expect(readText("\(f.root)/h") == "inner")
        f.expectSentinelUntouched()
    }

    @Test("whiteouts naming . or .. or climbing out are rejected", arguments: [".wh..", ".wh...", "a/.wh..", "../.wh.sentinel", "a/../../.wh.x"])
    func whiteoutNames(name: String) throws {
        let f = try Fixture()
        defer { f.scratch.cleanup() }
        for mode in [ApplyOptions.Whiteouts.delete, .overlay] {
            expectError(.invalidArgument, [name]) {
                try apply(try tarBytes([.dir("a"), .file(name)]), to: f.root, options: ApplyOptions(whiteouts: mode))
            }
        }
        f.expectSentinelUntouched()
    }

    @Test("a whiteout below a symlink to outside removes inside the root only")
    func whiteoutThroughSymlink() throws {
        let f = try Fixture()
        defer { f.scratch.cleanup() }
        try apply(try tarBytes([.symlink("out", f.sentinel), .file("out/.wh.passwd"), .file(".wh..wh..opq")]), to: f.root)
        f.expectSentinelUntouched()
        // (The root's opaque marker then removed what the layer created as parents.) In overlay mode the
        // dangling symlink's target is created inside the root, as containerd's RootPath + MkdirAll do.
        try apply(try tarBytes([.symlink("out2", f.sentinel), .file("out2/.wh.passwd")]), to: f.root,
                  options: ApplyOptions(whiteouts: .overlay))
        #expect(lstatPath("\(f.root)\(f.sentinel)/passwd")!.st_mode & S_IFMT == S_IFCHR)
        f.expectSentinelUntouched()
    }

    @Test("oversized headers, long paths and negative sizes are rejected naming the entry")
    func oversized() throws {
        let f = try Fixture()
        defer { f.scratch.cleanup() }
        let deep = Array(repeating: "abcdefghij", count: 420).joined(separator: "/")
        expectError(.invalidArgument, ["exceeds 4096"]) { try apply(try tarBytes([.file(deep, "x")]), to: f.root) }
        // A pax header of 2 MiB (one huge xattr).
        let big = Item.file("bigpax", "x", xattrs: [("user.big", [UInt8](repeating: 0x61, count: 2 << 20))])
        expectError(.invalidArgument, ["bigpax", "1 MiB"]) { try apply(try tarBytes([big]), to: f.root) }
        // A GNU long name ('L') of 2 MiB.
        var longName = [UInt8](repeating: 0, count: 512)
        for (i, b) in "././@LongLink".utf8.enumerated() { longName[i] = b }
        let size = String(2 << 20, radix: 8)
        for (i, b) in (String(repeating: "0", count: 11 - size.count) + size).utf8.enumerated() { longName[124 + i] = b }
        longName[156] = UInt8(ascii: "L")
        for (i, b) in "ustar  \0".utf8.enumerated() { longName[257 + i] = b }
        fixChecksum(&longName)
        expectError(.invalidArgument, ["GNU long name", "1 MiB"]) {
            try apply(longName + [UInt8](repeating: 0x61, count: 2 << 20), to: f.root)
        }
        f.expectSentinelUntouched()
    }
}
