#define _GNU_SOURCE
#include "CBerthSystem.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>

// The child reports a failed step through the pipe as its errno, then exits; an exec that
// succeeds closes the pipe (close-on-exec) with nothing written.
static void fail(int report, int error) {
    (void)!write(report, &error, sizeof(error));
    _exit(127);
}

pid_t cberth_spawn_private_mounts(const char *path, char *const argv[], char *const envp[],
                                  const int *dups, int dup_count, const char *hide, int *child_errno) {
    int report[2];
    *child_errno = 0;
    if (pipe2(report, O_CLOEXEC) != 0) return -1;
    pid_t pid = fork();
    if (pid < 0) {
        int saved = errno;
        close(report[0]);
        close(report[1]);
        errno = saved;
        return -1;
    }
    if (pid == 0) {
        // Only async-signal-safe calls from here: the parent has other threads.
        if (unshare(CLONE_NEWNS) != 0) fail(report[1], errno);
        if (mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) fail(report[1], errno);
        if (umount2(hide, MNT_DETACH) != 0) fail(report[1], errno);
        for (int i = 0; i < dup_count; i++) {
            int source = dups[2 * i], target = dups[2 * i + 1];
            if (source == target) {
                if (fcntl(target, F_SETFD, 0) != 0) fail(report[1], errno);
            } else if (dup2(source, target) < 0) {
                fail(report[1], errno);
            }
        }
        struct sigaction defaults = { .sa_handler = SIG_DFL };
        for (int sig = 1; sig < NSIG; sig++) {
            if (sig != SIGKILL && sig != SIGSTOP) (void)sigaction(sig, &defaults, NULL);
        }
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execve(path, argv, envp);
        fail(report[1], errno);
    }
    close(report[1]);
    int error = 0;
    ssize_t n;
    do { n = read(report[0], &error, sizeof(error)); } while (n < 0 && errno == EINTR);
    close(report[0]);
    if (n == (ssize_t)sizeof(error)) {
        *child_errno = error;
        // The child has exited; the caller still reaps it.
    }
    return pid;
}
