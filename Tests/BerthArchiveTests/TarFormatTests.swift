import BerthCore
import BerthSystem
import BerthTestSupport
import CBerthSystem
import Foundation
import Testing
@testable import BerthArchive

@Suite("Tar formats")
struct TarFormatTests {
    @Test("media types and magic bytes choose the compression")
    func compressionDetection() {
        #expect(LayerCompression(mediaType: "application/vnd.oci.image.layer.v1.tar+gzip") == .gzip)
        #expect(LayerCompression(mediaType: "application/vnd.oci.image.layer.v1.tar+zstd") == .zstd)
        #expect(LayerCompression(mediaType: "application/vnd.oci.image.layer.v1.tar") == .uncompressed)
        #expect(LayerCompression(mediaType: "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip") == .gzip)
        #expect(LayerCompression(mediaType: "application/vnd.docker.image.rootfs.diff.tar.gzip") == .gzip)
        #expect(LayerCompression(mediaType: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip") == .gzip)
        #expect(LayerCompression(mediaType: "application/vnd.docker.image.rootfs.diff.tar") == .uncompressed)
        #expect(LayerCompression(mediaType: "application/vnd.oci.image.config.v1+json") == nil)
        #expect(LayerCompression.detect([0x1F, 0x8B, 8, 0]) == .gzip)
        #expect(LayerCompression.detect([0x28, 0xB5, 0x2F, 0xFD]) == .zstd)
        #expect(LayerCompression.detect(Array("usr/".utf8)) == .uncompressed)
        #expect(LayerCompression.detect([UInt8]()) == .uncompressed)
    }

    @Test("numeric fields: octal, GNU base-256 and negative base-256")
    func numbers() throws {
        func parse(_ bytes: [UInt8]) throws -> Int64 {
            try bytes.withUnsafeBytes { try parseNumber($0) }
        }
        #expect(try parse(Array("0000644\0".utf8)) == 0o644)
        #expect(try parse(Array("   755 \0".utf8)) == 0o755)
        #expect(try parse([0x80, 0, 0, 0, 0, 0, 0x01, 0x00]) == 256)
        #expect(try parse([0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02] + []) == 2)
        #expect(try parse([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]) == -1)
        #expect(throws: TarNumberError.self) { try parse(Array("12x4\0".utf8)) }
        #expect(parsePaxTime(Array("1700000000.5".utf8)) == .init(seconds: 1_700_000_000, nanoseconds: 500_000_000))
        #expect(parsePaxTime(Array("-1.25".utf8)) == .init(seconds: -2, nanoseconds: 750_000_000))
        #expect(TarWriter.formatTime(.init(seconds: 12, nanoseconds: 120_000_000)) == "12.12")
        #expect(EntryPath.normalize(Array("/a//b/./c/".utf8)) == Array("a/b/c".utf8))
        #expect(EntryPath.normalize(Array("a/../b".utf8)) == Array("b".utf8))
        #expect(EntryPath.normalize(Array("a/../../b".utf8)) == nil)
        #expect(EntryPath.normalize(Array("./".utf8)) == [])
    }

    /// Builds the same tree with GNU tar in each format and checks every attribute survives an apply.
    @Test("GNU tar's ustar, gnu and pax archives apply with all attributes", arguments: ["gnu", "pax", "ustar"])
    func systemTarFormats(format: String) throws {
        let scratch = try Scratch("fmt")
        defer { scratch.cleanup() }
        let source = try scratch.sub("src")
        let longDir = String(repeating: "d", count: format == "ustar" ? 90 : 120) + "/" + String(repeating: "e", count: 40)
        let longName = format == "ustar" ? "short" : String(repeating: "n", count: 150)
        _ = try sh("""
            cd \(source) && mkdir -p a/b \(longDir) && printf hello > a/b/file && chmod 4755 a/b/file \
            && printf x > \(longDir)/\(longName) && ln -s ../a/b/file a/link && ln a/b/file a/hard \
            && mkfifo a/fifo && mknod a/null c 1 3 && mknod a/blk b 7 0 && chown 1234:5678 a/b/file \
            && chmod 4755 a/b/file && chmod 1777 a/b && touch -h -d '2020-01-02 03:04:05.123456789' a/link a/b/file \
            && touch -d '2019-05-06 07:08:09' a/b a \(longDir) && printf big > a/empty && : > a/empty
            """)
        if format == "pax" {
            try setXattr("\(source)/a/b/file", "user.color", "blue")
            try setXattr("\(source)/a/b/file", "trusted.t", "1")
            try setXattr("\(source)/a/b", "user.dir", "yes")
        }
        let tarFile = "\(scratch.path)/layer.tar"
        let xattrFlags = format == "pax" ? "--xattrs --xattrs-include='*'" : ""
        _ = try sh("tar --format=\(format) \(xattrFlags) --numeric-owner -C \(source) -cf \(tarFile) .")
        let target = try scratch.sub("target")
        let result = try applyFile(tarFile, .uncompressed, to: target)
        #expect(result.uncompressedSize == Int64(FileSystem.size(of: tarFile)!))
        #expect(result.compressedSize == result.uncompressedSize)
        let sha = try sh("sha256sum \(tarFile)").stdout.prefix(64)
        #expect(result.uncompressedDigest.encoded == String(sha))
        var expected = try describeTree(source)
        var actual = try describeTree(target)
        if format != "pax" {
            // Only pax carries sub-second times.
            expected = expected.mapValues { $0.replacing(/mtime=(\d+)\.\d+/) { "mtime=\($0.1).0" } }
        }
        // The root directory itself ("./") is ignored, as containerd does.
        expected.removeValue(forKey: ".")
        actual.removeValue(forKey: ".")
        expectSameTrees(expected, actual)
        #expect(lstatPath("\(target)/a/b/file")!.st_mode & 0o7777 == 0o4755)
    }

    @Test("pax records: long path and link, xattrs, uid/gid and nanosecond mtime; global headers ignored")
    func paxRecords() throws {
        let scratch = try Scratch("pax")
        defer { scratch.cleanup() }
        let target = try scratch.sub("t")
        let long = Array(repeating: String(repeating: "p", count: 99), count: 3).joined(separator: "/")
        var file = Item.file("\(long)/f", "data", mode: 0o640, uid: 3_000_000, gid: 4_000_000, mtime: 1_700_000_000,
                             nanos: 987_654_321, xattrs: [("user.k", Array("v".utf8)), ("security.x", [1, 2])])
        file.entry.atime = nil
        var bytes = try tarBytes([file, .symlink("s", "/" + long + "/f")])
        // Put a pax global header in front: it must be skipped.
        var global = [UInt8](repeating: 0, count: 512)
        for (i, b) in "global".utf8.enumerated() { global[i] = b }
        let record = Array("18 comment=hello\n".utf8)
        let size = String(record.count, radix: 8)
        for (i, b) in (String(repeating: "0", count: 11 - size.count) + size).utf8.enumerated() { global[124 + i] = b }
        global[156] = UInt8(ascii: "g")
        for (i, b) in "ustar\u{0}00".utf8.enumerated() { global[257 + i] = b }
        for i in 148..<156 { global[i] = 0x20 }
        let sum = String(global.reduce(0) { $0 + Int($1) }, radix: 8)
        for (i, b) in (String(repeating: "0", count: 6 - sum.count) + sum).utf8.enumerated() { global[148 + i] = b }
        global[154] = 0
        bytes = global + record + [UInt8](repeating: 0, count: 512 - record.count) + bytes
        try apply(bytes, to: target)
        let st = try #require(lstatPath("\(target)/\(long)/f"))
        #expect(st.st_uid == 3_000_000 && st.st_gid == 4_000_000)
        #expect(st.st_mtim.tv_sec == 1_700_000_000 && st.st_mtim.tv_nsec == 987_654_321)
        #expect(st.st_mode & 0o7777 == 0o640)
        #expect(xattr("\(target)/\(long)/f", "user.k") == Array("v".utf8))
        #expect(xattr("\(target)/\(long)/f", "security.x") == [1, 2])
        #expect(String(decoding: try readLinkAt(AT_FDCWD, "\(target)/s"), as: UTF8.self) == "/" + long + "/f")
    }

    @Test("a later entry replaces an earlier one; a directory over a directory keeps its contents")
    func replacement() throws {
        let scratch = try Scratch("replace")
        defer { scratch.cleanup() }
        let target = try scratch.sub("t")
        try apply(try tarBytes([.dir("d", mode: 0o700), .file("d/keep", "k"), .file("x", "one"), .dir("y"), .file("y/z", "z"),
                                .symlink("s", "/nowhere")]), to: target)
        try apply(try tarBytes([.dir("d", mode: 0o751, uid: 7, gid: 8), .file("x", "two"), .file("y", "file now"),
                                .dir("s"), .file("s/inside", "i")]), to: target)
        #expect(readText("\(target)/d/keep") == "k")
        let d = try #require(lstatPath("\(target)/d"))
        #expect(d.st_mode & 0o7777 == 0o751 && d.st_uid == 7 && d.st_gid == 8)
        #expect(readText("\(target)/x") == "two")
        #expect(readText("\(target)/y") == "file now")
        #expect(readText("\(target)/s/inside") == "i")
    }

    @Test("devices, fifos, hardlinks and directory times")
    func specialEntries() throws {
        let scratch = try Scratch("special")
        defer { scratch.cleanup() }
        let target = try scratch.sub("t")
        var dir = Item.dir("dev", mtime: 1_234_567)
        dir.entry.mtime.nanoseconds = 0
        var hardlink = Item.hardlink("dev/h", "dev/f")
        hardlink.entry.mode = 0o2755  // a link entry's metadata applies to the shared inode, as in containerd
        try apply(try tarBytes([dir, .node("dev/null", .characterDevice, major: 1, minor: 3, mode: 0o666),
                                .node("dev/loop9", .blockDevice, major: 7, minor: 9), .node("dev/pipe", .fifo),
                                .file("dev/f", "data", mode: 0o2755), hardlink]), to: target)
        let null = try #require(lstatPath("\(target)/dev/null"))
        #expect(null.st_mode & S_IFMT == S_IFCHR && cberth_major(null.st_rdev) == 1 && cberth_minor(null.st_rdev) == 3)
        #expect(null.st_mode & 0o777 == 0o666)
        let loop = try #require(lstatPath("\(target)/dev/loop9"))
        #expect(loop.st_mode & S_IFMT == S_IFBLK && cberth_minor(loop.st_rdev) == 9)
        #expect(lstatPath("\(target)/dev/pipe")!.st_mode & S_IFMT == S_IFIFO)
        let f = try #require(lstatPath("\(target)/dev/f"))
        #expect(f.st_nlink == 2 && f.st_ino == lstatPath("\(target)/dev/h")!.st_ino)
        #expect(f.st_mode & 0o7777 == 0o2755)
        #expect(lstatPath("\(target)/dev")!.st_mtim.tv_sec == 1_234_567)
    }

    @Test("malformed archives: truncated data, bad checksum, sparse files, negative size")
    func malformed() throws {
        let scratch = try Scratch("malformed")
        defer { scratch.cleanup() }
        let target = try scratch.sub("t")
        let good = try tarBytes([.file("f", String(repeating: "x", count: 5000))])
        expectError(.dataLoss, ["unexpected end"]) { try apply(Array(good.prefix(2048)), to: target) }
        var corrupt = good
        corrupt[0] = UInt8(ascii: "Z")
        expectError(.dataLoss, ["checksum"]) { try apply(corrupt, to: target) }
        var sparse = try tarBytes([.file("sparse", "")])
        sparse[156] = UInt8(ascii: "S")
        fixChecksum(&sparse)
        expectError(.invalidArgument, ["sparse", "GNU sparse"]) { try apply(sparse, to: target) }
        var negative = try tarBytes([.file("neg", "")])
        for i in 124..<136 { negative[i] = 0xFF }
        fixChecksum(&negative)
        expectError(.invalidArgument, ["neg", "negative size"]) { try apply(negative, to: target) }
    }
}

/// Recomputes the checksum of the first header block.
func fixChecksum(_ bytes: inout [UInt8]) {
    for i in 148..<156 { bytes[i] = 0x20 }
    let sum = String(bytes[0..<512].reduce(0) { $0 + Int($1) }, radix: 8)
    for (i, b) in (String(repeating: "0", count: 6 - sum.count) + sum).utf8.enumerated() { bytes[148 + i] = b }
    bytes[154] = 0
}
