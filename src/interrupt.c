/* Interrupt plumbing. The host's signal handlers only record the signal and
 * write a byte to a self-pipe; every wait in the engine polls that pipe, so
 * a Ctrl-C while waiting for readiness is seen at once. */
#define _GNU_SOURCE
#include "mkh.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t pending;
static int pipefd[2] = { -1, -1 };
/* a second self-pipe, for a thread of the host's that blocks on it (the
 * waits drain the first) */
static int notefd[2] = { -1, -1 };

void mkh_interrupt_init(void)
{
    if (pipefd[0] >= 0) return;
    if (pipe2(pipefd, O_CLOEXEC | O_NONBLOCK) != 0) pipefd[0] = pipefd[1] = -1;
}

int mkh_interrupt_note_fd(void)
{
    if (notefd[0] < 0 && pipe2(notefd, O_CLOEXEC) != 0) notefd[0] = notefd[1] = -1;
    return notefd[0];
}

void mkh_interrupt(int sig)
{
    int saved = errno;
    if (!pending) pending = sig;
    if (pipefd[1] >= 0) {
        ssize_t n = write(pipefd[1], "!", 1);
        (void)n;
    }
    if (notefd[1] >= 0) {
        ssize_t n = write(notefd[1], "!", 1);
        (void)n;
    }
    errno = saved;
}

int mkh_interrupted(void) { return pending; }

int mkh_interrupt_drain(void)
{
    char buf[64];
    int n = 0;
    ssize_t r;
    if (pipefd[0] < 0) return 0;
    while ((r = read(pipefd[0], buf, sizeof buf)) > 0) n += (int)r;
    return n;
}

/* Where pidfd_open is missing (Linux < 5.3, valgrind), process exit is
 * learned from SIGCHLD through a second self-pipe. The handler only writes;
 * it reaps nothing, so popen/system in the same process are unaffected. */
static int chld[2] = { -1, -1 };

static void on_sigchld(int sig)
{
    (void)sig;
    int saved = errno;
    ssize_t n = write(chld[1], "c", 1);
    (void)n;
    errno = saved;
}

int mkh_exit_fd(void)
{
    if (chld[0] >= 0) return chld[0];
    if (pipe2(chld, O_CLOEXEC | O_NONBLOCK) != 0) return chld[0] = chld[1] = -1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigchld;
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGCHLD, &sa, NULL);
    return chld[0];
}

void mkh_exit_fd_drain(void)
{
    char buf[256];
    if (chld[0] >= 0)
        while (read(chld[0], buf, sizeof buf) > 0) {}
}
int mkh_interrupt_fd(void) { return pipefd[0]; }
