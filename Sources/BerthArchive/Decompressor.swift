import BerthCore
import CZlib
import CZstd

/// A streaming decompressor: turns compressed input into output, a piece at a time.
protocol StreamDecoder: AnyObject {
    /// Consumes some of `input` (advancing it) and writes output into `output`, returning how many bytes it
    /// wrote. Call again while `input` is not empty or the output was filled completely.
    /// Throws `dataLoss` for corrupt data.
    func process(_ input: inout UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws(BerthError) -> Int
    /// Called at the end of input; throws `dataLoss` if the stream stopped in the middle.
    func finish() throws(BerthError)
}

func makeDecoder(_ compression: LayerCompression) throws(BerthError) -> (any StreamDecoder)? {
    switch compression {
    case .uncompressed: nil
    case .gzip: try GzipDecoder()
    case .zstd: try ZstdDecoder()
    }
}

/// gzip through zlib's inflate, including multi-member streams (pigz, Go and concatenated `gzip` output):
/// after each member's trailer, more input starts the next member.
final class GzipDecoder: StreamDecoder {
    /// Heap-allocated: zlib keeps a pointer back to its `z_stream` and checks it on every call.
    private let stream: UnsafeMutablePointer<z_stream>
    private var memberComplete = false
    private var sawInput = false

    init() throws(BerthError) {
        stream = .allocate(capacity: 1)
        stream.initialize(to: z_stream())
        // 15 window bits + 16: expect a gzip wrapper (header and CRC-32 trailer), not raw zlib.
        guard czlib_inflate_init2(stream, 15 + 16) == Z_OK else {
            stream.deallocate()
            throw .internal("gzip: cannot initialize zlib inflate")
        }
    }

    deinit {
        inflateEnd(stream)
        stream.deallocate()
    }

    func process(_ input: inout UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws(BerthError) -> Int {
        if !input.isEmpty { sawInput = true }
        if memberComplete {
            guard !input.isEmpty else { return 0 }
            inflateReset(stream)
            memberComplete = false
        }
        stream.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
        stream.pointee.avail_in = uInt(input.count)
        stream.pointee.next_out = output.baseAddress?.assumingMemoryBound(to: Bytef.self)
        stream.pointee.avail_out = uInt(output.count)
        let status = inflate(stream, Z_NO_FLUSH)
        let consumed = input.count - Int(stream.pointee.avail_in)
        let produced = output.count - Int(stream.pointee.avail_out)
        input = UnsafeRawBufferPointer(rebasing: input[consumed...])
        switch status {
        case Z_OK, Z_BUF_ERROR:
            if consumed == 0 && produced == 0 && !input.isEmpty && !output.isEmpty {
                throw BerthError(.dataLoss, "gzip: decompression made no progress")
            }
        case Z_STREAM_END:
            memberComplete = true
        default:
            let detail = stream.pointee.msg.map { String(cString: $0) } ?? "error \(status)"
            throw BerthError(.dataLoss, "gzip: corrupt compressed data: \(detail)")
        }
        return produced
    }

    func finish() throws(BerthError) {
        guard sawInput else { throw BerthError(.dataLoss, "gzip: empty stream") }
        guard memberComplete else { throw BerthError(.dataLoss, "gzip: unexpected end of compressed data") }
    }
}

/// zstd through libzstd's streaming decoder; consecutive frames (and skippable frames) decode as one stream.
final class ZstdDecoder: StreamDecoder {
    private let context: OpaquePointer
    private var lastHint = 0
    private var sawInput = false

    init() throws(BerthError) {
        guard let context = ZSTD_createDStream() else { throw .internal("zstd: cannot create decoder") }
        self.context = context
        _ = ZSTD_initDStream(context)
    }

    deinit { ZSTD_freeDStream(context) }

    func process(_ input: inout UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws(BerthError) -> Int {
        if !input.isEmpty { sawInput = true }
        var inBuffer = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
        var outBuffer = ZSTD_outBuffer(dst: output.baseAddress, size: output.count, pos: 0)
        let hint = ZSTD_decompressStream(context, &outBuffer, &inBuffer)
        if ZSTD_isError(hint) != 0 {
            throw BerthError(.dataLoss, "zstd: corrupt compressed data: \(String(cString: ZSTD_getErrorName(hint)))")
        }
        lastHint = hint
        input = UnsafeRawBufferPointer(rebasing: input[inBuffer.pos...])
        if inBuffer.pos == 0 && outBuffer.pos == 0 && !input.isEmpty && !output.isEmpty {
            throw BerthError(.dataLoss, "zstd: decompression made no progress")
        }
        return outBuffer.pos
    }

    func finish() throws(BerthError) {
        guard sawInput else { throw BerthError(.dataLoss, "zstd: empty stream") }
        guard lastHint == 0 else { throw BerthError(.dataLoss, "zstd: unexpected end of compressed data") }
    }
}
