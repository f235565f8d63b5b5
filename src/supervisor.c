/* The supervisor: the process the user started forks the real host and
 * stays as its parent. (The host program's, not the engine's.) */
#define _GNU_SOURCE
#include "mkh.h"
#include "host.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- the supervisor: a parent that outlives a SIGKILLed host ----
 * The process the user started forks the real host and stays as its parent,
 * a child subreaper that only forwards signals and waits. If the host is
 * SIGKILLed, everything it started is reparented here (the nearest
 * subreaper) and killed - even a descendant that left every session and
 * scrubbed its environment. If the supervisor itself is SIGKILLed, the host
 * gets SIGTERM (parent-death signal) and tears down at once, without grace;
 * a host stuck where no signal reaches Lua is killed by its guardian a few
 * seconds later. Exit status is the host's. MKHARNESS_SUPERVISOR=0 runs
 * without it. */

static pid_t host_pid;
static volatile sig_atomic_t hard_timeout;

static void forward(int sig)
{
    if (host_pid <= 0) return;
    if (sig == SIGALRM) { /* --timeout's hard limit: the host is stuck */
        hard_timeout = 1;
        kill(host_pid, SIGKILL);
        return;
    }
    kill(host_pid, sig);
}

static void kill_strays(void)
{
    /* our children other than the host are orphans of the run */
    double until = mkh_now() + 5.0;
    for (;;) {
        char path[64], buf[8192];
        snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)getpid());
        if (mkh_read_small(path, buf, sizeof buf) > 0) {
            for (char *p = buf; *p; ) {
                char *end;
                long v = strtol(p, &end, 10);
                if (end == p) break;
                p = end;
                kill(-(pid_t)v, SIGKILL);
                kill((pid_t)v, SIGKILL);
            }
        }
        int st;
        pid_t r = waitpid(-1, &st, 0);
        if ((r < 0 && errno == ECHILD) || mkh_now() > until) return;
    }
}


pid_t host_supervise(double timeout)
{
    const char *off = getenv("MKHARNESS_SUPERVISOR");
    if (off && !strcmp(off, "0")) return 0;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) return 0; /* run unsupervised rather than not at all */
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) raise(SIGTERM);
        mkh_set_supervisor(parent);
        return parent;
    }
    host_pid = pid;
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = forward;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    int fwd[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 };
    for (size_t i = 0; i < sizeof fwd / sizeof fwd[0]; i++) sigaction(fwd[i], &sa, NULL);
    if (timeout > 0) {
        sigaction(SIGALRM, &sa, NULL);
        double t = timeout + MKH_HARD_GRACE;
        struct itimerval it;
        memset(&it, 0, sizeof it);
        it.it_value.tv_sec = (time_t)t;
        it.it_value.tv_usec = (suseconds_t)((t - (double)(time_t)t) * 1e6);
        setitimer(ITIMER_REAL, &it, NULL);
    }
    int status = 0;
    for (;;) {
        pid_t r = waitpid(pid, &status, 0);
        if (r == pid) break;
        if (r < 0 && errno != EINTR) { status = 1 << 8; break; }
    }
    host_pid = 0;
    /* a SIGKILLed host leaves its cgroup (and its guardian, which
     * kill_strays ends) behind: clean it here first */
    if (!(WIFEXITED(status))) mkh_cg_cleanup_host(pid);
    kill_strays();
    if (hard_timeout) {
        fprintf(stderr, "mkharness: run timeout: the host did not end within %g s of --timeout; killed it\n",
                MKH_HARD_GRACE);
        _exit(124);
    }
    if (WIFEXITED(status)) _exit(WEXITSTATUS(status));
    _exit(WIFSIGNALED(status) ? 128 + WTERMSIG(status) : 1);
}

