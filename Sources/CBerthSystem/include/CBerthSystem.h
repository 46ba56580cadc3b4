#ifndef CBERTHSYSTEM_H
#define CBERTHSYSTEM_H

#include <malloc.h>
#include <linux/openat2.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/xattr.h>   // not part of Swift's Glibc module: fsetxattr, lsetxattr, lgetxattr, llistxattr
#include <unistd.h>

/// Starts `path` the way posix_spawn would (the descriptor pairs `dups` (source, target) dup2'd in
/// order, default signal dispositions, an empty signal mask), but in a private mount namespace of
/// its own from which the mount at `hide` is lazily removed. Returns the child's pid, or -1 with
/// errno when it could not be forked; when a step in the child failed (the exec included), the
/// child has exited 127 and `*child_errno` holds that step's errno, else it is 0. The caller
/// reaps the child either way.
pid_t cberth_spawn_private_mounts(const char *path, char *const argv[], char *const envp[],
                                  const int *dups, int dup_count, const char *hide, int *child_errno);

/// close_range(fd, ~0U, 0): closes every descriptor from `fd` up.
static inline int cberth_close_from(unsigned int fd) { return (int)syscall(SYS_close_range, fd, ~0U, 0); }

/// glibc allocator controls that Swift's Glibc module does not export.
static inline int cberth_mallopt_mmap_threshold(int bytes) { return mallopt(M_MMAP_THRESHOLD, bytes); }
// Threads Berth starts itself (thread.c): marked at their start, read by Swift.
void cberth_mark_own_thread(void);
int cberth_is_own_thread(void);
static inline int cberth_mallopt_arena_max(int arenas) { return mallopt(M_ARENA_MAX, arenas); }
static inline int cberth_malloc_trim(void) { return malloc_trim(0); }

/// openat2(2), which glibc 2.36 does not wrap. `resolve` takes RESOLVE_* flags, e.g.
/// RESOLVE_IN_ROOT to resolve `path` as if `dirfd` were the root directory.
static inline int cberth_openat2(int dirfd, const char *path, unsigned long long flags,
                                 unsigned long long mode, unsigned long long resolve) {
    struct open_how how = { .flags = flags, .mode = mode, .resolve = resolve };
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
}
static const unsigned long long CBERTH_RESOLVE_IN_ROOT = RESOLVE_IN_ROOT;
static const unsigned long long CBERTH_RESOLVE_NO_MAGICLINKS = RESOLVE_NO_MAGICLINKS;
static const unsigned long long CBERTH_RESOLVE_NO_SYMLINKS = RESOLVE_NO_SYMLINKS;
static const unsigned long long CBERTH_RESOLVE_BENEATH = RESOLVE_BENEATH;
static const unsigned long long CBERTH_RESOLVE_NO_XDEV = RESOLVE_NO_XDEV;

/// Device numbers (macros in glibc).
static inline dev_t cberth_makedev(unsigned int major, unsigned int minor) { return makedev(major, minor); }
static inline unsigned int cberth_major(dev_t dev) { return major(dev); }
static inline unsigned int cberth_minor(dev_t dev) { return minor(dev); }

/// The new mount API (Linux 5.2+; `lowerdir+` for overlayfs since 6.8), which takes overlay
/// layers one by one instead of one option string limited to a page.
/// Constants from <linux/mount.h>, which cannot be included beside glibc's <sys/mount.h>.
enum {
    CBERTH_FSOPEN_CLOEXEC = 1,
    CBERTH_FSCONFIG_SET_FLAG = 0,
    CBERTH_FSCONFIG_SET_STRING = 1,
    CBERTH_FSCONFIG_CMD_CREATE = 6,
    CBERTH_FSMOUNT_CLOEXEC = 1,
    CBERTH_MOUNT_ATTR_RDONLY = 1,
    CBERTH_MOVE_MOUNT_F_EMPTY_PATH = 4,
};
static inline int cberth_fsopen(const char *fstype, unsigned int flags) {
    return (int)syscall(SYS_fsopen, fstype, flags);
}
static inline int cberth_fsconfig(int fd, unsigned int cmd, const char *key, const char *value, int aux) {
    return (int)syscall(SYS_fsconfig, fd, cmd, key, value, aux);
}
static inline int cberth_fsmount(int fd, unsigned int flags, unsigned int attributes) {
    return (int)syscall(SYS_fsmount, fd, flags, attributes);
}
static inline int cberth_move_mount(int from_dirfd, const char *from_path, int to_dirfd, const char *to_path, unsigned int flags) {
    return (int)syscall(SYS_move_mount, from_dirfd, from_path, to_dirfd, to_path, flags);
}

/// accept4(2), pipe2(2) and naming the calling thread: glibc declares the first two only under
/// _GNU_SOURCE, which Swift's Glibc module does not define, so they go through syscall(2) here.
static inline int cberth_accept4(int fd, int flags) { return (int)syscall(SYS_accept4, fd, (void *)0, (void *)0, flags); }
static inline int cberth_pipe2(int fds[2], int flags) { return (int)syscall(SYS_pipe2, fds, flags); }
static inline int cberth_set_thread_name(const char *name) { return prctl(PR_SET_NAME, name, 0, 0, 0); }

/// berth-shim: child subreaper, SCM_RIGHTS receive, terminal window size.
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
static inline int cberth_set_child_subreaper(void) { return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); }
/// Receives one file descriptor sent with SCM_RIGHTS on `sock` (made close-on-exec); -1 on error.
static inline int cberth_recv_fd(int sock) {
    char data[256];
    struct iovec iov = { .iov_base = data, .iov_len = sizeof(data) };
    union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int))]; } control;
    struct msghdr msg = { 0 };
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof(control.buf);
    if (recvmsg(sock, &msg, MSG_CMSG_CLOEXEC) < 0) return -1;
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    if (cmsg == 0 || cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) return -1;
    int fd;
    memcpy(&fd, CMSG_DATA(cmsg), sizeof(int));
    return fd;
}
static inline int cberth_set_winsize(int fd, unsigned short rows, unsigned short cols) {
    struct winsize size = { .ws_row = rows, .ws_col = cols };
    return ioctl(fd, TIOCSWINSZ, &size);
}

/// The file system type (statfs f_type) of `path`, or -1; <sys/vfs.h> is not in Swift's Glibc module.
static inline long cberth_fs_type(const char *path) {
    struct statfs info;
    return statfs(path, &info) == 0 ? (long)info.f_type : -1;
}

/// berth-shim's OOM watch: an eventfd(2) registered through cgroup v1's cgroup.event_control, and
/// inotify(7) on cgroup v2's memory.events. Neither header is in Swift's Glibc module.
#include <sys/eventfd.h>
#include <sys/inotify.h>
/// A non-blocking, close-on-exec eventfd with counter 0; -1 on error.
static inline int cberth_eventfd(void) { return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK); }
/// A non-blocking, close-on-exec inotify instance; -1 on error.
static inline int cberth_inotify_init(void) { return inotify_init1(IN_CLOEXEC | IN_NONBLOCK); }
/// Watches `path` for IN_MODIFY (cgroup v2 notifies memory.events this way); the watch descriptor or -1.
static inline int cberth_inotify_watch_modify(int fd, const char *path) { return inotify_add_watch(fd, path, IN_MODIFY); }

#endif
