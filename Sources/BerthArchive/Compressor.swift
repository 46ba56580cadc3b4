#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import BerthCore
import BerthSystem
import CZlib
import CZstd
import Crypto

/// The gzip level for layers Berth writes. zlib levels 1–3 share the "fast" deflate strategy; level 1 is
/// about 3× faster than the default 6 on layer data and costs a few percent of size (see README.md for the
/// measurements), and diff output is on the commit path of every container snapshot.
let gzipLevel: Int32 = 1
/// zstd's own default level: already faster than gzip -1 at a better ratio.
let zstdLevel: Int32 = 3

/// Where a layer being written goes: hashes the uncompressed tar, compresses it, hashes and counts the
/// compressed bytes and writes them to a file descriptor in large writes.
final class LayerOutput {
    private let fd: Int32
    private let compression: LayerCompression
    private var uncompressedHasher = SHA256()
    private var compressedHasher = SHA256()
    private(set) var compressedSize: Int64 = 0
    private let staging: UnsafeMutableRawBufferPointer
    private var staged = 0
    private let output: UnsafeMutableRawBufferPointer
    private var zlib: UnsafeMutablePointer<z_stream>?
    private var zstd: OpaquePointer?

    static let bufferSize = 1 << 20

    init(fd: Int32, compression: LayerCompression) throws(BerthError) {
        self.fd = fd
        self.compression = compression
        staging = .allocate(byteCount: Self.bufferSize, alignment: 4096)
        output = .allocate(byteCount: Self.bufferSize, alignment: 4096)
        switch compression {
        case .uncompressed: break
        case .gzip:
            let stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
            stream.initialize(to: z_stream())
            guard czlib_deflate_init2(stream, gzipLevel, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK else {
                stream.deallocate()
                throw .internal("gzip: cannot initialize zlib deflate")
            }
            zlib = stream
        case .zstd:
            guard let context = ZSTD_createCCtx() else { throw .internal("zstd: cannot create encoder") }
            _ = ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, zstdLevel)
            zstd = context
        }
    }

    deinit {
        staging.deallocate()
        output.deallocate()
        if let zlib {
            deflateEnd(zlib)
            zlib.deallocate()
        }
        if let zstd { ZSTD_freeCCtx(zstd) }
    }

    /// Appends uncompressed bytes.
    func write(_ bytes: UnsafeRawBufferPointer) throws(BerthError) {
        var offset = 0
        while offset < bytes.count {
            let n = min(bytes.count - offset, staging.count - staged)
            UnsafeMutableRawBufferPointer(rebasing: staging[staged..<(staged + n)])
                .copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + n)]))
            staged += n
            offset += n
            if staged == staging.count { try flushStaging(final: false) }
        }
    }

    func write(_ bytes: [UInt8]) throws(BerthError) {
        let failure: BerthError? = bytes.withUnsafeBytes { buffer in
            do throws(BerthError) { try write(buffer) } catch { return error }
            return nil
        }
        if let failure { throw failure }
    }

    /// Flushes everything, ends the compressed stream and returns the digests.
    func finish() throws(BerthError) -> (uncompressed: BerthCore.Digest, compressed: BerthCore.Digest) {
        try flushStaging(final: true)
        return (BerthCore.Digest(algorithm: .sha256, bytes: uncompressedHasher.finalize()),
                BerthCore.Digest(algorithm: .sha256, bytes: compressedHasher.finalize()))
    }

    private func emit(_ bytes: UnsafeRawBufferPointer) throws(BerthError) {
        guard !bytes.isEmpty else { return }
        compressedHasher.update(bufferPointer: bytes)
        compressedSize += Int64(bytes.count)
        do throws(BerthError) {
            try FileSystem.writeAll(fd: fd, bytes)
        } catch {
            if error.code == .resourceExhausted {
                throw BerthError(.resourceExhausted, "no space left on device while writing the layer")
            }
            throw error
        }
    }

    private func flushStaging(final: Bool) throws(BerthError) {
        let input = UnsafeRawBufferPointer(rebasing: staging[0..<staged])
        uncompressedHasher.update(bufferPointer: input)
        staged = 0
        if let zlib {
            zlib.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
            zlib.pointee.avail_in = uInt(input.count)
            while true {
                zlib.pointee.next_out = output.baseAddress!.assumingMemoryBound(to: Bytef.self)
                zlib.pointee.avail_out = uInt(output.count)
                let status = deflate(zlib, final ? Z_FINISH : Z_NO_FLUSH)
                guard status == Z_OK || status == Z_STREAM_END || status == Z_BUF_ERROR else {
                    throw .internal("gzip: deflate failed (\(status))")
                }
                try emit(UnsafeRawBufferPointer(rebasing: output[0..<(output.count - Int(zlib.pointee.avail_out))]))
                if final ? status == Z_STREAM_END : (zlib.pointee.avail_in == 0 && zlib.pointee.avail_out != 0) { break }
            }
        } else if let zstd {
            var inBuffer = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
            while true {
                var outBuffer = ZSTD_outBuffer(dst: output.baseAddress, size: output.count, pos: 0)
                let remaining = ZSTD_compressStream2(zstd, &outBuffer, &inBuffer, final ? ZSTD_e_end : ZSTD_e_continue)
                if ZSTD_isError(remaining) != 0 {
                    throw .internal("zstd: compression failed: \(String(cString: ZSTD_getErrorName(remaining)))")
                }
                try emit(UnsafeRawBufferPointer(rebasing: output[0..<outBuffer.pos]))
                if final ? remaining == 0 : inBuffer.pos == inBuffer.size { break }
            }
        } else {
            try emit(input)
        }
    }
}
