#ifndef CBERTHSYSTEM_H
#define CBERTHSYSTEM_H

#include <malloc.h>

/// glibc allocator controls that Swift's Glibc module does not export.
static inline int cberth_mallopt_mmap_threshold(int bytes) { return mallopt(M_MMAP_THRESHOLD, bytes); }
static inline int cberth_mallopt_arena_max(int arenas) { return mallopt(M_ARENA_MAX, arenas); }
static inline int cberth_malloc_trim(void) { return malloc_trim(0); }

#endif
