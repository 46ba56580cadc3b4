import BerthCore
import BerthSystem
import BerthTestSupport
import Foundation
import Testing
@testable import BerthArchive

@Suite("Compression and digests")
struct CompressionTests {
    func sample() throws -> [UInt8] {
        var items: [Item] = [.dir("d")]
        for i in 0..<200 { items.append(.file("d/f\(i)", String(repeating: "line \(i)\n", count: i * 50))) }
        // 3 MiB of poorly compressible bytes to cross the pipeline's chunk boundaries.
        var rng = SystemRandomNumberGenerator()
        let big = (0..<(3 << 20)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        var bigItem = Item.file("big", "")
        bigItem.data = big
        bigItem.entry.size = Int64(big.count)
        items.append(bigItem)
        return try tarBytes(items)
    }

    func digest(_ bytes: [UInt8]) throws -> String {
        let scratch = try Scratch("digest")
        defer { scratch.cleanup() }
        try FileSystem.writeAtomically(bytes, to: "\(scratch.path)/f")
        return String(try sh("sha256sum \(scratch.path)/f").stdout.prefix(64))
    }

    @Test("gzip, multi-member gzip, zstd, multi-frame zstd and plain tar give the same tree and diff ID",
          arguments: ["plain", "gzip", "gzip-multi", "zstd", "zstd-multi"])
    func formats(kind: String) throws {
        let scratch = try Scratch("comp")
        defer { scratch.cleanup() }
        var tar = try sample()
        tar += [UInt8](repeating: 0, count: 4096)  // extra bytes after the trailer count in the diff ID
        let half = tar.count / 2
        let layer: [UInt8]
        let compression: LayerCompression
        switch kind {
        case "gzip": layer = try compress(tar, with: ["gzip", "-c"]); compression = .gzip
        case "gzip-multi":
            layer = try compress(Array(tar[..<half]), with: ["gzip", "-c"]) + compress(Array(tar[half...]), with: ["gzip", "-1", "-c"])
            compression = .gzip
        case "zstd": layer = try compress(tar, with: ["zstd", "-q", "-c"]); compression = .zstd
        case "zstd-multi":
            layer = try compress(Array(tar[..<half]), with: ["zstd", "-q", "-c"]) + compress(Array(tar[half...]), with: ["zstd", "-q", "-c"])
            compression = .zstd
        default: layer = tar; compression = .uncompressed
        }
        #expect(LayerCompression.detect(layer.prefix(4)) == compression)
        let root = try scratch.sub("root")
        let result = try apply(layer, compression, to: root)
        #expect(result.uncompressedDigest.encoded == (try digest(tar)))
        #expect(result.uncompressedSize == Int64(tar.count))
        #expect(result.compressedSize == Int64(layer.count))
        #expect(FileSystem.size(of: "\(root)/big") == 3 << 20)
        #expect(readText("\(root)/d/f7") == String(repeating: "line 7\n", count: 350))
    }

    @Test("corrupt or truncated compressed data is dataLoss", arguments: [LayerCompression.gzip, .zstd])
    func corrupt(compression: LayerCompression) throws {
        let scratch = try Scratch("corrupt")
        defer { scratch.cleanup() }
        let tar = try sample()
        let layer = try compress(tar, with: compression == .gzip ? ["gzip", "-c"] : ["zstd", "-q", "-c"])
        var flipped = layer
        for i in stride(from: layer.count / 3, to: layer.count / 3 + 64, by: 1) { flipped[i] ^= 0x5A }
        let root = try scratch.sub("root")
        expectError(.dataLoss) { try apply(flipped, compression, to: root) }
        expectError(.dataLoss) { try apply(Array(layer.prefix(layer.count - 100)), compression, to: root) }
        expectError(.dataLoss) { try apply([], compression, to: root) }
        expectError(.dataLoss) { try apply(Array("not compressed at all".utf8), compression, to: root) }
    }

    @Test("shouldContinue returning false stops with cancelled")
    func cancellation() throws {
        let scratch = try Scratch("cancel")
        defer { scratch.cleanup() }
        let root = try scratch.sub("root")
        let layer = try compress(try sample(), with: ["gzip", "-c"])
        expectError(.cancelled) {
            try apply(layer, .gzip, to: root, options: ApplyOptions(whiteouts: .delete, shouldContinue: { false }))
        }
    }

    @Test("a full disk is resourceExhausted naming the entry")
    func noSpace() throws {
        let scratch = try Scratch("enospc")
        defer { scratch.cleanup() }
        let root = try scratch.sub("small")
        _ = try sh("mount -t tmpfs -o size=1m tmpfs \(root)")
        defer { _ = try? Command.run(["umount", root]) }
        expectError(.resourceExhausted, ["no space left on device while writing \""]) {
            try apply(try sample(), to: root)
        }
    }

    @Test("diff output in each compression decompresses to the same tar", arguments: [LayerCompression.gzip, .zstd, .uncompressed])
    func diffCompression(compression: LayerCompression) throws {
        let scratch = try Scratch("diffcomp")
        defer { scratch.cleanup() }
        let upper = try scratch.sub("upper")
        try apply(try sample(), to: upper)
        let out = "\(scratch.path)/layer"
        let fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        let result = try LayerDiffer.writeDiff(lower: nil, upper: upper, compression: compression, to: fd)
        close(fd)
        let bytes = try FileSystem.readFile(out)
        #expect(result.compressedSize == Int64(bytes.count))
        #expect(result.compressedDigest.encoded == (try digest(bytes)))
        #expect(LayerCompression.detect(bytes.prefix(4)) == compression)
        let copy = try scratch.sub("copy")
        let applied = try applyFile(out, compression, to: copy)
        #expect(applied.uncompressedDigest == result.uncompressedDigest)
        if compression == .uncompressed { #expect(result.uncompressedDigest == result.compressedDigest) }
    }
}
