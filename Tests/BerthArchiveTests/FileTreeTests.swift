import BerthCore
import BerthSystem
import BerthTestSupport
import Foundation
import Testing
@testable import BerthArchive

@Suite("FileTree")
struct FileTreeTests {
    @Test("copy keeps hard links, xattrs, devices, symlinks (not followed), owners, modes and times")
    func copy() throws {
        let scratch = try Scratch("tree-copy")
        defer { scratch.cleanup() }
        let outside = try scratch.sub("outside")
        let source = try scratch.sub("source")
        _ = try sh("""
            cd \(source) && mkdir -p a/b && printf hello > a/b/f && ln a/b/f a/h && ln -s \(outside) a/out \
            && ln -s b/f a/rel && mknod a/c c 1 5 && mknod a/blk b 7 3 && mkfifo a/p && chown -h 7:8 a/out \
            && chmod 2750 a/b && chown 1:2 a/b/f && chmod 4755 a/b/f && mkdir ro && chmod 555 ro \
            && python3 -c "import socket; s=socket.socket(socket.AF_UNIX); s.bind('a/sock')" \
            && touch -h -d '2020-02-02 02:02:02.5' a/out a/b/f && touch -d '2019-01-01' a/b a ro
            """)
        try setXattr("\(source)/a/b/f", "user.x", "1")
        try setXattr("\(source)/a/b/f", "trusted.y", "2")
        try setXattr("\(source)/a/b/f", "security.z", "3")
        try setXattr("\(source)/a", "user.dir", "d")
        let destination = try scratch.sub("destination")
        try FileTree.copy(from: source, to: destination)
        var expected = try describeTree(source, includeRoot: true)
        expected.removeValue(forKey: "a/sock")
        expectSameTrees(expected, try describeTree(destination, includeRoot: true))
        #expect(lstatPath("\(destination)/a/h")!.st_ino == lstatPath("\(destination)/a/b/f")!.st_ino)
        #expect(FileSystem.list(outside).isEmpty)
    }

    @Test("usage counts blocks and inodes, each hard-linked inode once, the directory included")
    func usage() throws {
        let scratch = try Scratch("tree-usage")
        defer { scratch.cleanup() }
        let root = try scratch.sub("root")
        _ = try sh("cd \(root) && mkdir d && head -c 100000 /dev/urandom > d/f && ln d/f d/g && ln -s f d/s && printf x > y")
        let usage = try FileTree.usage(of: root)
        #expect(usage.inodes == 5)  // root, d, f (= g), s, y
        let expected = try sh("du -s -B1 \(root) | cut -f1").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(usage.size == Int64(expected))
        #expect(usage.size >= 100_000)
    }

    @Test("removeTree removes read-only directories, does not follow symlinks, accepts a missing path")
    func removeTree() throws {
        let scratch = try Scratch("tree-rm")
        defer { scratch.cleanup() }
        let sentinel = try scratch.sub("sentinel")
        try FileSystem.writeAtomically(Array("keep".utf8), to: "\(sentinel)/file")
        let root = try scratch.sub("root")
        _ = try sh("cd \(root) && mkdir -p ro/inner && printf x > ro/inner/f && chmod 0 ro/inner && chmod 555 ro && ln -s \(sentinel) link && ln -s \(sentinel)/file flink")
        try FileTree.removeTree(root)
        #expect(!exists(root))
        #expect(readText("\(sentinel)/file") == "keep")
        try FileTree.removeTree(root)
        // A symlink given as the path itself is removed, not its target.
        _ = try sh("ln -s \(sentinel) \(scratch.path)/l")
        try FileTree.removeTree("\(scratch.path)/l")
        #expect(!exists("\(scratch.path)/l") && readText("\(sentinel)/file") == "keep")
        expectError(.invalidArgument) { try FileTree.removeTree("/") }
    }
}
