#ifndef CBERTHRUNTIME_H
#define CBERTHRUNTIME_H

#include <sys/types.h>

/// Starts `path` with `argv` and `envp` in directory `dir`, its stdin, stdout and stderr on the
/// given descriptors, every other descriptor closed, default signal dispositions, an empty
/// signal mask and its own process group (containerd starts shims with Setpgid).
/// Returns 0 and sets `*pid`, or an errno value. posix_spawn's chdir and closefrom file actions
/// are GNU extensions that Swift's Glibc module does not declare, hence this C helper.
int cberth_spawn(pid_t *pid, const char *path, char *const argv[], char *const envp[], const char *dir,
                 int stdin_fd, int stdout_fd, int stderr_fd);

/// pipe2(2) with O_CLOEXEC.
int cberth_pipe_cloexec(int fds[2]);

/// pidfd_open(2): a descriptor that polls readable once process `pid` has exited. Returns it, or
/// -1 with errno set (ENOSYS before Linux 5.3).
int cberth_pidfd_open(pid_t pid);

#endif
