import CBerthSystem

/// How the daemon asks glibc's allocator to give memory back.
///
/// glibc keeps freed memory for reuse: per-thread arenas (up to 8 per core) and a dynamic mmap
/// threshold that rises after the first large free, after which 1 MiB request buffers come from
/// the heap and stay there. A daemon that streams blobs in 1 MiB pieces then holds tens of MiB it
/// no longer uses. A fixed threshold keeps such buffers mmapped (returned on free), two arenas
/// bound fragmentation across threads, and a trim after bulk work returns what is left.
public enum Memory {
    /// Call once at start-up, before other threads allocate.
    public static func configureAllocator() {
        _ = cberth_mallopt_mmap_threshold(256 << 10)
        _ = cberth_mallopt_arena_max(2)
    }

    /// Returns free heap pages to the system.
    public static func releaseFreePages() {
        _ = cberth_malloc_trim()
    }
}
