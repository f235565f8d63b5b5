/* Interrupt plumbing. The host's signal handlers only record the signal and
 * write a byte to a self-pipe; every wait in the engine polls that pipe, so
 * a Ctrl-C while waiting for readiness is seen at once. */
#define _GNU_SOURCE
#include "mkh.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

static volatile sig_atomic_t pending;
static int pipefd[2] = { -1, -1 };

void mkh_interrupt_init(void)
{
    if (pipefd[0] >= 0) return;
    if (pipe2(pipefd, O_CLOEXEC | O_NONBLOCK) != 0) pipefd[0] = pipefd[1] = -1;
}

void mkh_interrupt(int sig)
{
    int saved = errno;
    if (!pending) pending = sig;
    if (pipefd[1] >= 0) {
        ssize_t n = write(pipefd[1], "!", 1);
        (void)n;
    }
    errno = saved;
}

int mkh_interrupted(void) { return pending; }
int mkh_interrupt_fd(void) { return pipefd[0]; }
