#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import BerthCore
import BerthSystem
import Crypto

/// The first stage of an apply: reads the compressed layer from a file descriptor in large reads,
/// decompresses it and hashes the uncompressed bytes on its own thread, handing fixed-size chunks to the
/// consumer (tar parsing and file writes, on the caller's thread) through a small ring of buffers.
///
/// Every chunk but the last is exactly ``chunkSize`` bytes, a multiple of the tar block size, so a tar
/// header never straddles two chunks in a well-formed stream.
final class LayerPipeline: @unchecked Sendable {
    // @unchecked: all mutable state below is guarded by `lock`, except the buffers' contents, which belong to
    // exactly one side at a time (a buffer index is either in `free`, in `full`, or held by one thread).

    struct Summary: Sendable {
        var digest: BerthCore.Digest
        var uncompressedSize: Int64
        var compressedSize: Int64
    }

    static let chunkSize = 1 << 20
    static let chunkCount = 4
    static let readSize = 1 << 20

    private let source: Int32
    private let compression: LayerCompression
    private let buffers: [UnsafeMutableRawBufferPointer]
    private let lock: UnsafeMutablePointer<pthread_mutex_t>
    private let chunkReady: UnsafeMutablePointer<pthread_cond_t>
    private let bufferFreed: UnsafeMutablePointer<pthread_cond_t>
    private var full: [(index: Int, count: Int)] = []
    private var free: [Int]
    private var outcome: Result<Summary, BerthError>?
    private var stopRequested = false
    private var held: Int?
    private var thread: pthread_t?

    init(source: Int32, compression: LayerCompression) {
        self.source = source
        self.compression = compression
        buffers = (0..<Self.chunkCount).map { _ in
            .allocate(byteCount: Self.chunkSize, alignment: 4096)
        }
        free = Array(0..<Self.chunkCount)
        lock = .allocate(capacity: 1)
        pthread_mutex_init(lock, nil)
        chunkReady = .allocate(capacity: 1)
        pthread_cond_init(chunkReady, nil)
        bufferFreed = .allocate(capacity: 1)
        pthread_cond_init(bufferFreed, nil)
    }

    deinit {
        for buffer in buffers { buffer.deallocate() }
        pthread_mutex_destroy(lock)
        pthread_cond_destroy(chunkReady)
        pthread_cond_destroy(bufferFreed)
        lock.deallocate()
        chunkReady.deallocate()
        bufferFreed.deallocate()
    }

    /// Starts the producer thread.
    func start() throws(BerthError) {
        var thread = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        let status = pthread_create(&thread, nil, { context in
            let pipeline = Unmanaged<LayerPipeline>.fromOpaque(context!).takeRetainedValue()
            pipeline.run()
            return nil
        }, context)
        guard status == 0 else {
            Unmanaged<LayerPipeline>.fromOpaque(context).release()
            throw errnoError("start layer decompression thread", errno: status)
        }
        self.thread = thread
    }

    // MARK: Consumer side

    /// The next chunk of uncompressed bytes, valid until the following call; nil at the end of the stream.
    /// Throws the producer's error (`dataLoss` for corrupt data) once the chunks before it are consumed.
    func next() throws(BerthError) -> UnsafeRawBufferPointer? {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        if let held {
            free.append(held)
            self.held = nil
            pthread_cond_signal(bufferFreed)
        }
        while full.isEmpty && outcome == nil {
            pthread_cond_wait(chunkReady, lock)
        }
        if !full.isEmpty {
            let chunk = full.removeFirst()
            held = chunk.index
            return UnsafeRawBufferPointer(rebasing: buffers[chunk.index][0..<chunk.count])
        }
        switch outcome! {
        case .success: return nil
        case .failure(let error): throw error
        }
    }

    /// Reads the rest of the stream (so the digest covers every byte up to EOF), waits for the producer and
    /// returns its digest and sizes.
    func finish() throws(BerthError) -> Summary {
        while try next() != nil {}
        join()
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        return try outcome!.get()
    }

    /// Stops the producer early (after an error or cancellation) and waits for it.
    func cancel() {
        pthread_mutex_lock(lock)
        stopRequested = true
        pthread_cond_broadcast(bufferFreed)
        pthread_mutex_unlock(lock)
        join()
    }

    private func join() {
        if let thread {
            pthread_join(thread, nil)
            self.thread = nil
        }
    }

    // MARK: Producer side

    private func run() {
        let result: Result<Summary, BerthError>
        do throws(BerthError) {
            result = .success(try produce())
        } catch {
            result = .failure(error)
        }
        pthread_mutex_lock(lock)
        outcome = result
        pthread_cond_broadcast(chunkReady)
        pthread_mutex_unlock(lock)
    }

    /// A free buffer, waiting for the consumer to return one; nil when asked to stop.
    private func acquire() -> Int? {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        while free.isEmpty && !stopRequested {
            pthread_cond_wait(bufferFreed, lock)
        }
        if stopRequested { return nil }
        return free.removeLast()
    }

    private func push(_ index: Int, count: Int) {
        pthread_mutex_lock(lock)
        full.append((index, count))
        pthread_cond_signal(chunkReady)
        pthread_mutex_unlock(lock)
    }

    private func release(_ index: Int) {
        pthread_mutex_lock(lock)
        free.append(index)
        pthread_mutex_unlock(lock)
    }

    private var stopped: Bool {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        return stopRequested
    }

    private func readSource(into buffer: UnsafeMutableRawBufferPointer) throws(BerthError) -> Int {
        while true {
            let n = read(source, buffer.baseAddress, buffer.count)
            if n >= 0 { return n }
            if errno == EINTR { continue }
            throw errnoError("read layer")
        }
    }

    private func produce() throws(BerthError) -> Summary {
        let stopError = BerthError(.cancelled, "layer apply cancelled")
        var hasher = SHA256()
        var compressedSize: Int64 = 0
        var uncompressedSize: Int64 = 0
        let decoder = try makeDecoder(compression)
        let input = UnsafeMutableRawBufferPointer.allocate(byteCount: decoder == nil ? 0 : Self.readSize, alignment: 4096)
        defer { input.deallocate() }
        guard var current = acquire() else { throw stopError }
        var fill = 0

        func emitCurrent() throws(BerthError) {
            let chunk = UnsafeRawBufferPointer(rebasing: buffers[current][0..<fill])
            hasher.update(bufferPointer: chunk)
            uncompressedSize += Int64(fill)
            push(current, count: fill)
            fill = 0
            guard let next = acquire() else { throw stopError }
            current = next
        }

        while true {
            if stopped { throw stopError }
            if let decoder {
                let n = try readSource(into: input)
                if n == 0 { break }
                compressedSize += Int64(n)
                var pending = UnsafeRawBufferPointer(rebasing: input[0..<n])
                var filledUp = false
                repeat {
                    let space = UnsafeMutableRawBufferPointer(rebasing: buffers[current][fill...])
                    fill += try decoder.process(&pending, into: space)
                    filledUp = fill == Self.chunkSize
                    if filledUp { try emitCurrent() }
                } while !pending.isEmpty || filledUp
            } else {
                let n = try readSource(into: UnsafeMutableRawBufferPointer(rebasing: buffers[current][fill...]))
                if n == 0 { break }
                compressedSize += Int64(n)
                fill += n
                if fill == Self.chunkSize { try emitCurrent() }
            }
        }
        try decoder?.finish()
        if fill > 0 {
            let chunk = UnsafeRawBufferPointer(rebasing: buffers[current][0..<fill])
            hasher.update(bufferPointer: chunk)
            uncompressedSize += Int64(fill)
            push(current, count: fill)
        } else {
            release(current)
        }
        return Summary(digest: BerthCore.Digest(algorithm: .sha256, bytes: hasher.finalize()),
                       uncompressedSize: uncompressedSize, compressedSize: compressedSize)
    }
}
