/* The guardian: a child of the host, in its own session, holding a pipe
 * from it. The host tells it each service session it starts (with its
 * leader's start time) and each it has reaped. When the pipe closes
 * without a goodbye, the host died abnormally: the guardian kills the
 * run's cgroup and every process of the sessions it still holds (while
 * their leader is the one started) or carrying the run's marker, each
 * pinned by a pidfd before it is checked. It also watches the host's
 * supervisor: a host that outlives it by a few seconds (stuck where no
 * signal reaches Lua) is killed, then cleaned up after. */
#define _GNU_SOURCE
#include "mkh.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static pid_t guardian_pid;
/* a guardian told goodbye and killed but not waited for: still ours (an
 * unreaped child) and never a stray, or teardown's hunt would find it and
 * wait out its quiet spell */
static pid_t retired_pid;
static int guardian_fd = -1;    /* write end; -1 when none */
static pid_t supervisor_pid;
void mkh_set_supervisor(pid_t pid) { supervisor_pid = pid; }

pid_t mkh_guardian_pid(void) { return guardian_pid ? guardian_pid : retired_pid; }

typedef struct { pid_t sid; unsigned long long ticks; } watched;

/* Is v one of the watched sessions, and is it still the session we
 * started? A session id outlives its leader only while members remain;
 * once the leader is gone a stranger may have the same number, so
 * without the leader's start time to compare, the session proves nothing. */
static int in_sessions(pid_t v, const watched *set, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (set[i].sid == v) return set[i].ticks && mkh_start_ticks(v) == set[i].ticks;
    return 0;
}

/* The guardian's net, once the harness is dead: every process of the
 * sessions / process groups we started (while their leader is the one we
 * started), or carrying our marker. Returns how many were signalled. */
static int kill_marked(const watched *set, size_t n, const char *marker, int sig)
{
    DIR *d = opendir("/proc");
    if (!d) return 0;
    pid_t self = getpid();
    size_t mlen = marker ? strlen(marker) : 0;
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!isdigit((unsigned char)e->d_name[0])) continue;
        pid_t pid = (pid_t)atoi(e->d_name);
        if (pid == self || pid == mkh_guardian_pid() || pid == 1) continue;
        /* pin the process first: what is checked below is then the process
         * the signal reaches, even if the number is reused meanwhile */
        int fd = (int)syscall(SYS_pidfd_open, pid, 0);
        if (fd < 0 && errno != ENOSYS) continue; /* gone */
        char st; pid_t pp, pg, sd;
        if (mkh_proc_stat(pid, &st, &pp, &pg, &sd, NULL) == 0 && st != 'Z' && st != 'X') {
            int hit = in_sessions(sd, set, n) || in_sessions(pg, set, n) ||
                      (mlen && mkh_has_marker(pid, marker, mlen));
            if (hit && (fd >= 0 ? syscall(SYS_pidfd_send_signal, fd, sig, NULL, 0) : kill(pid, sig)) == 0) count++;
        }
        if (fd >= 0) close(fd);
    }
    closedir(d);
    return count;
}

/* Seconds a host may take to end once its supervisor is gone; its own
 * teardown then has no grace left (parent-death signal), so this is ample. */
#define ORPHANED_HOST_GRACE 5.0

static void guardian_main(int fd, const char *marker, int host_fd, int sup_fd)
{
    watched *set = NULL;
    size_t n = 0, cap = 0;
    char buf[4096];
    size_t have = 0;
    int goodbye = 0;
    char cg[4096] = "";
    double host_deadline = -1;
    for (;;) {
        struct pollfd pf[2] = { { fd, POLLIN, 0 }, { sup_fd, POLLIN, 0 } };
        int ms = host_deadline < 0 ? -1 : (int)((host_deadline - mkh_now()) * 1000.0) + 1;
        if (host_deadline >= 0 && ms <= 0) {
            /* the host outlived its supervisor, stuck where no signal
             * reaches it (in C, a blocking call): end it, then clean up */
            if (host_fd >= 0) syscall(SYS_pidfd_send_signal, host_fd, SIGKILL, NULL, 0);
            break;
        }
        if (poll(pf, sup_fd >= 0 ? 2 : 1, ms) < 0 && errno != EINTR) break;
        if (sup_fd >= 0 && pf[1].revents) {
            close(sup_fd);
            sup_fd = -1;
            host_deadline = mkh_now() + ORPHANED_HOST_GRACE;
        }
        if (!pf[0].revents) continue;
        ssize_t r = read(fd, buf + have, sizeof buf - have);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        have += (size_t)r;
        char *nl;
        while ((nl = memchr(buf, '\n', have)) != NULL) {
            *nl = '\0';
            if (buf[0] == 'Q') goodbye = 1;
            else if (buf[0] == 'C') snprintf(cg, sizeof cg, "%s", buf + 2);
            else if (buf[0] == 'S') {
                void *arr = set;
                if (mkh_grow(&arr, &cap, n + 1, sizeof *set) != 0) _exit(1);
                set = arr;
                unsigned long long ticks = 0;
                int sid = 0;
                if (sscanf(buf + 2, "%d %llu", &sid, &ticks) == 2) set[n++] = (watched){ sid, ticks };
            } else if (buf[0] == 'D') { /* reaped: its id may be anybody's now */
                pid_t sid = (pid_t)atoi(buf + 2);
                for (size_t i = 0; i < n; i++)
                    if (set[i].sid == sid) { set[i] = set[--n]; break; }
            }
            size_t used = (size_t)(nl - buf) + 1;
            memmove(buf, buf + used, have - used);
            have -= used;
        }
        if (goodbye) _exit(0);
    }
    /* The harness is gone without saying goodbye: kill what it started.
     * Repeat until a pass finds nothing, since forks may race the scan. */
    if (cg[0]) mkh_cg_kill(cg, 5.0);
    double until = mkh_now() + 5.0;
    while (mkh_now() < until) {
        if (kill_marked(set, n, marker, SIGKILL) == 0) break;
        mkh_sleep_until(mkh_now() + 0.01);
    }
    _exit(0);
}

/* After the fork or the exec: pin the host and its supervisor, then guard. */
static void guardian_run(int fd, const char *marker, pid_t host, pid_t sup)
{
    prctl(PR_SET_NAME, "mkh-guardian");
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* pidfds pin who the host and its supervisor are; the supervisor
     * counts only while it is still the host's parent */
    int host_fd = (int)syscall(SYS_pidfd_open, host, 0);
    if (host_fd >= 0 && getppid() != host) { close(host_fd); host_fd = -1; }
    int sup_fd = -1;
    if (sup > 0 && host_fd >= 0) {
        sup_fd = (int)syscall(SYS_pidfd_open, sup, 0);
        char st; pid_t pp = 0, pg, sd;
        if (sup_fd >= 0 && (mkh_proc_stat(host, &st, &pp, &pg, &sd, NULL) != 0 || pp != sup)) {
            close(sup_fd);
            sup_fd = -1;
        }
    }
    guardian_main(fd, marker, host_fd, sup_fd);
}

/* The signals a kill of the harness's process group would bring: ignored
 * (an ignored disposition survives the exec) */
MKH_CHILD_CODE static void ignore_group_signals(void)
{
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGQUIT, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
}

static const void *self_addr; /* set by the host program: an address in its binary */

void mkh_guardian_exec_self(const void *addr) { self_addr = addr; }

/* The file the host's code is mapped from, from /proc/self/maps: not
 * /proc/self/exe, which names the loader when the host was started as
 * `ld.so mkharness` and valgrind's launcher under valgrind. 0, or -1 when
 * none fits (a replaced binary shows as "(deleted)"). */
static int self_path(char *out, size_t len)
{
    FILE *f = fopen("/proc/self/maps", "re");
    if (!f) return -1;
    char line[4400];
    int found = -1;
    uintptr_t a = (uintptr_t)self_addr;
    while (found < 0 && fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        int at = 0;
        if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %n", &lo, &hi, &at) < 2 || at == 0) continue;
        if (a < lo || a >= hi) continue;
        char *path = line + at, *nl = strchr(path, '\n');
        if (nl) *nl = '\0';
        if (path[0] == '/' && !strstr(path, " (deleted)") && strlen(path) < len) {
            snprintf(out, len, "%s", path);
            found = 0;
        }
        break;
    }
    fclose(f);
    return found;
}

typedef struct {
    const char *exe;
    int fd;
    char *const *argv;
    volatile int failed; /* written by the child, which shares our memory */
} exec_args;

MKH_CHILD_CODE static int guardian_exec_child(void *arg)
{
    exec_args *a = arg;
    ignore_group_signals();
    /* its own session: a kill of the harness's process group (a CI
     * runner's timeout) must not take the guardian with it */
    setsid();
    /* stdio for diagnostics, the pipe as fd 3, nothing else of the host */
    if (a->fd == 3 ? fcntl(3, F_SETFD, 0) != 0 : dup2(a->fd, 3) != 3) { a->failed = 1; _exit(127); }
    syscall(SYS_close_range, 4u, ~0u, 0u);
    execve(a->exe, a->argv, environ);
    a->failed = 1;
    _exit(127);
}

/* The guardian as a fresh image of the host binary, started by vfork +
 * exec: a fork would leave the host sharing its whole heap copy-on-write
 * with the guardian for the rest of the run, and pay a fault for each page
 * it writes afterwards. Returns the pid, or -1 (then fork instead). */
static pid_t guardian_exec(const char *exe, int fd, char *const argv[])
{
    exec_args a = { exe, fd, argv, 0 };
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old); /* no handler of ours runs in the child */
    pid_t pid = mkh_vfork_call(guardian_exec_child, &a, 1);
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (pid > 0 && a.failed) {
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
        return -1;
    }
    return pid;
}

#define GUARDIAN_FLAG "--mkh-guardian"

int mkh_guardian_exec_main(int argc, char **argv)
{
    if (argc != 6 || strcmp(argv[1], GUARDIAN_FLAG) != 0) return -1;
    guardian_run(atoi(argv[2]), argv[5], (pid_t)atoi(argv[3]), (pid_t)atoi(argv[4]));
    return 0; /* not reached: guardian_main exits */
}

static void guardian_start(void)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return;
    char marker[128];
    snprintf(marker, sizeof marker, "MKHARNESS_RUN=%s", mkh_run_id());
    pid_t host = getpid(), sup = supervisor_pid;
    pid_t pid = -1;
    char exe[4096];
    if (self_addr && self_path(exe, sizeof exe) == 0) {
        char hs[24], ss[24];
        snprintf(hs, sizeof hs, "%d", (int)host);
        snprintf(ss, sizeof ss, "%d", (int)sup);
        char *argv[] = { "mkh-guardian", GUARDIAN_FLAG, "3", hs, ss, marker, NULL };
        pid = guardian_exec(exe, p[0], argv);
    }
    if (pid < 0) pid = fork();
    if (pid < 0) { close(p[0]); close(p[1]); return; }
    if (pid == 0) {
        ignore_group_signals();
        setsid();
        int fd = p[0];
        /* keep stderr for diagnostics; nothing else of the host */
        if (fd > 3) syscall(SYS_close_range, 3u, (unsigned)fd - 1, 0u);
        syscall(SYS_close_range, (unsigned)fd + 1, ~0u, 0u);
        guardian_run(fd, marker, host, sup);
    }
    close(p[0]);
    guardian_pid = pid;
    guardian_fd = p[1];
    const char *cg = mkh_cg_run();
    if (cg) {
        char line[4200];
        int len = snprintf(line, sizeof line, "C %s\n", cg);
        if (write(guardian_fd, line, (size_t)len) < 0) { /* guardian gone */ }
    }
}

void mkh_guardian_ensure(void)
{
    if (guardian_fd < 0 && guardian_pid == 0) guardian_start();
}

void mkh_guardian_watch(pid_t sid, unsigned long long start_ticks)
{
    mkh_guardian_ensure();
    if (guardian_fd < 0) return;
    char line[64];
    int len = snprintf(line, sizeof line, "S %d %llu\n", (int)sid, start_ticks);
    if (write(guardian_fd, line, (size_t)len) < 0) { /* guardian gone: nothing to do */ }
}

void mkh_guardian_forget(pid_t sid)
{
    if (guardian_fd < 0) return;
    char line[32];
    int len = snprintf(line, sizeof line, "D %d\n", (int)sid);
    if (write(guardian_fd, line, (size_t)len) < 0) { /* guardian gone: nothing to do */ }
}

void mkh_guardian_stop(void)
{
    if (guardian_fd < 0) return;
    if (write(guardian_fd, "Q\n", 2) < 0) { /* already gone */ }
    close(guardian_fd);
    guardian_fd = -1;
    if (guardian_pid <= 0) return;
    /* after the goodbye it has nothing left to do but exit: a guardian
     * still starting up (a short run) is not waited for until it reads it.
     * Its pid is ours until reaped, so the signal reaches it. Its exit is
     * not waited for either (a few ms here, in parallel with ours): the
     * supervisor reaps it, or init once we are gone. */
    kill(guardian_pid, SIGKILL);
    int st;
    pid_t r;
    while ((r = waitpid(guardian_pid, &st, WNOHANG)) < 0 && errno == EINTR) {}
    retired_pid = r == guardian_pid ? 0 : guardian_pid;
    guardian_pid = 0;
}

