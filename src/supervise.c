/* Supervision: the run (id, directory), the live process list, reaping,
 * the guardian, and teardown that leaves nothing behind.
 *
 * Three nets catch every process a run started:
 *  - process groups/sessions: each service is a session leader;
 *  - the MKHARNESS_RUN=<id> marker in the environment;
 *  - the child-subreaper bit: orphaned descendants are reparented to us.
 * A guardian process (our child) holds a pipe from us; when it reads EOF
 * without a goodbye, the harness died abnormally and it kills what it can
 * find by session and marker. */
#define _GNU_SOURCE
#include "mkh.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char run_id[64];
static char run_dir[4096];
static int run_dir_made;
static int keep_dir;
static mkh_proc *live;          /* doubly linked list of unreaped procs */
static pid_t guardian_pid;
static int guardian_fd = -1;    /* write end; -1 when none */
static pid_t *sids;             /* every session this run started */
static size_t nsids, capsids;
static pid_t my_sid;
static int in_teardown; /* waits then ignore interrupts */

const char *mkh_run_id(void)
{
    if (!run_id[0]) {
        unsigned r = 0;
        int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            if (read(fd, &r, sizeof r) != (ssize_t)sizeof r) r = 0;
            close(fd);
        }
        if (!r) r = (unsigned)time(NULL) ^ (unsigned)getpid();
        snprintf(run_id, sizeof run_id, "%d-%08x", (int)getpid(), r);
    }
    return run_id;
}

const char *mkh_run_dir(char *err, size_t errlen)
{
    if (run_dir_made) return run_dir;
    const char *base = getenv("MKHARNESS_TMPDIR");
    if (!base || !*base) base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    snprintf(run_dir, sizeof run_dir, "%s/mkharness-%s", base, mkh_run_id());
    if (mkh_mkdir_p(run_dir, err, errlen) != 0) return NULL;
    run_dir_made = 1;
    return run_dir;
}

const char *mkh_run_dir_if_made(void) { return run_dir_made ? run_dir : NULL; }
void mkh_set_run_dir_keep(int keep) { keep_dir = keep; }
int mkh_run_dir_keep(void) { return keep_dir; }

/* Remove the run directory unless it must be kept. */
static void finish_run_dir(void)
{
    if (run_dir_made && !keep_dir) {
        mkh_rmtree(run_dir);
        run_dir_made = 0;
    }
}

void mkh_supervise_init(void)
{
    static int done;
    if (done) return;
    done = 1;
    /* a closed 0/1/2 would make our own pipes land there */
    for (int fd = 0; fd < 3; fd++)
        if (fcntl(fd, F_GETFD) < 0) open("/dev/null", O_RDWR);
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    my_sid = getsid(0);
}

void mkh_proc_link(mkh_proc *p)
{
    if (p->linked) return;
    p->prev = NULL;
    p->next = live;
    if (live) live->prev = p;
    live = p;
    p->linked = 1;
}

void mkh_proc_unlink(mkh_proc *p)
{
    if (!p->linked) return;
    if (p->prev) p->prev->next = p->next;
    else live = p->next;
    if (p->next) p->next->prev = p->prev;
    p->prev = p->next = NULL;
    p->linked = 0;
}

static void record_sid(pid_t sid)
{
    void *arr = sids;
    if (mkh_grow(&arr, &capsids, nsids + 1, sizeof *sids) != 0) return;
    sids = arr;
    sids[nsids++] = sid;
}

/* ---- /proc scanning ---- */

/* Fields of /proc/PID/stat after the command: state, ppid, pgrp, session. */
static int proc_stat(pid_t pid, char *state, pid_t *ppid, pid_t *pgrp, pid_t *sid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (mkh_read_small(path, buf, sizeof buf) <= 0) return -1;
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    int a, b, c;
    if (sscanf(p + 2, "%c %d %d %d", state, &a, &b, &c) != 4) return -1;
    *ppid = a; *pgrp = b; *sid = c;
    return 0;
}

static int has_marker(pid_t pid, const char *marker, size_t mlen)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/environ", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    /* environ can be large; scan it in chunks, entries are NUL-separated */
    static char buf[65536];
    size_t have = 0;
    int found = 0;
    for (;;) {
        ssize_t n = read(fd, buf + have, sizeof buf - have);
        if (n <= 0) break;
        have += (size_t)n;
        size_t start = 0;
        for (size_t i = 0; i < have; i++) {
            if (buf[i] == '\0') {
                if (i - start == mlen && !memcmp(buf + start, marker, mlen)) { found = 1; break; }
                start = i + 1;
            }
        }
        if (found) break;
        if (start == 0 && have == sizeof buf) have = 0; /* absurd entry: skip */
        else { memmove(buf, buf + start, have - start); have -= start; }
    }
    close(fd);
    return found;
}

static int in_sids(pid_t v, const pid_t *set, size_t n)
{
    for (size_t i = 0; i < n; i++) if (set[i] == v) return 1;
    return 0;
}

/* The guardian's net, once the harness is dead: every process of the given
 * sessions / process groups, or carrying our marker. Returns how many were
 * signalled. */
static int kill_marked(const pid_t *set, size_t n, const char *marker, int sig)
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
        if (pid == self || pid == guardian_pid || pid == 1) continue;
        char st; pid_t pp, pg, sd;
        if (proc_stat(pid, &st, &pp, &pg, &sd) != 0 || st == 'Z' || st == 'X') continue;
        int hit = in_sids(sd, set, n) || in_sids(pg, set, n) ||
                  (mlen && has_marker(pid, marker, mlen));
        if (hit && kill(pid, sig) == 0) count++;
    }
    closedir(d);
    return count;
}

/* ---- reaping ---- */

static void store_status(mkh_proc *p, int status)
{
    p->status = status;
    p->exited = 1;
    if (p->pidfd >= 0) close(p->pidfd);
    p->pidfd = -1;
    mkh_proc_unlink(p);
}

int mkh_proc_poll(mkh_proc *p)
{
    if (p->exited) return 1;
    int st;
    pid_t r;
    do r = waitpid(p->pid, &st, WNOHANG); while (r < 0 && errno == EINTR);
    if (r == p->pid) { store_status(p, st); return 1; }
    if (r < 0 && errno == ECHILD) { store_status(p, 0); return 1; } /* someone else reaped it */
    return 0;
}

int mkh_proc_wait(mkh_proc *p, double deadline)
{
    for (;;) {
        if (mkh_proc_poll(p)) return 1;
        double left = deadline < 0 ? -1 : deadline - mkh_now();
        if (deadline >= 0 && left <= 0) return 0;
        int fd = p->pidfd >= 0 ? p->pidfd : mkh_exit_fd();
        struct pollfd pf[2] = { { fd, POLLIN, 0 }, { mkh_interrupt_fd(), POLLIN, 0 } };
        /* a far deadline waits in day-long slices: an int of ms cannot hold it */
        int ms = left < 0 ? -1 : left > 86400 ? 86400 * 1000 : (int)(left * 1000.0) + 1;
        poll(pf, pf[1].fd >= 0 ? 2 : 1, ms);
        if (p->pidfd < 0) mkh_exit_fd_drain();
        if (mkh_interrupted() && !in_teardown) return 0;
    }
}

int mkh_proc_signal(mkh_proc *p, int sig)
{
    if (p->exited) return -1;
    if (kill(-p->pid, sig) == 0) return 0;
    return kill(p->pid, sig);
}

/* Our children that are not services nor the guardian: descendants of
 * services reparented to us after their parent died. */
static size_t orphans(pid_t *out, size_t cap)
{
    char path[64], buf[16384];
    snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)getpid());
    if (mkh_read_small(path, buf, sizeof buf) <= 0) return 0;
    size_t n = 0;
    for (char *s = buf; *s && n < cap; ) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s) break;
        s = end;
        pid_t pid = (pid_t)v;
        int known = pid == guardian_pid;
        for (mkh_proc *p = live; p && !known; p = p->next) known = p->pid == pid;
        if (!known) out[n++] = pid;
    }
    return n;
}

/* One pass over our stray children (not in our own session: popen and
 * system children are not ours to judge): reap the dead, SIGKILL the live
 * with their session and group - all of them, or with a token only those
 * carrying it. Returns how many it acted on. */
static int strike_orphans(const char *token)
{
    size_t tlen = token ? strlen(token) : 0;
    int acted = 0;
    pid_t kids[512];
    size_t n = orphans(kids, 512);
    for (size_t i = 0; i < n; i++) {
        char st; pid_t pp, pg, sd;
        if (proc_stat(kids[i], &st, &pp, &pg, &sd) != 0 || sd == my_sid) continue;
        if (st == 'Z') {
            int ws;
            waitpid(kids[i], &ws, WNOHANG);
        } else if (!tlen || has_marker(kids[i], token, tlen)) {
            kill(-sd, SIGKILL);
            kill(-pg, SIGKILL);
            kill(kids[i], SIGKILL);
        } else {
            continue;
        }
        acted++;
    }
    return acted;
}

int mkh_proc_sweep(mkh_proc *p, const char *token)
{
    /* The leader is reaped; kill what is left of its group, then chase
     * descendants that escaped the group: once their parent is gone they
     * are our children (subreaper), and the service token tells whose. */
    int killed = 0;
    if (p->cg_id) { /* exact: everything that ever was in its cgroup */
        char cg[4200];
        mkh_cg_path(p->cg_id, cg, sizeof cg);
        killed += mkh_cg_kill(cg, 2.0);
        p->cg_id = 0;
    }
    if (!token[0]) /* no token: only the group is known to be its */
        return killed + (kill(-p->pid, SIGKILL) == 0);
    double until = mkh_now() + 2.0;
    for (;;) {
        int found = strike_orphans(token);
        if (kill(-p->pid, SIGKILL) == 0) found++;
        killed += found;
        if (!found || mkh_now() > until) break;
        mkh_sleep_until(mkh_now() + 0.0005);
    }
    return killed;
}

size_t mkh_leftovers(pid_t *out, size_t cap)
{
    char marker[128];
    snprintf(marker, sizeof marker, "MKHARNESS_RUN=%s", mkh_run_id());
    size_t mlen = strlen(marker);
    size_t n = orphans(out, cap); /* our children that no live executor owns */
    DIR *d = opendir("/proc");
    if (!d) return n;
    pid_t self = getpid();
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < cap) {
        if (!isdigit((unsigned char)e->d_name[0])) continue;
        pid_t pid = (pid_t)atoi(e->d_name);
        if (pid == self || pid == guardian_pid) continue;
        int known = 0;
        for (mkh_proc *p = live; p; p = p->next) known |= p->pid == pid;
        for (size_t i = 0; i < n; i++) known |= out[i] == pid;
        if (known) continue;
        char st; pid_t pp, pg, sd;
        if (proc_stat(pid, &st, &pp, &pg, &sd) != 0 || st == 'Z') continue;
        if (has_marker(pid, marker, mlen)) out[n++] = pid;
    }
    closedir(d);
    return n;
}

/* ---- guardian ---- */

static void guardian_main(int fd, const char *marker)
{
    pid_t *set = NULL;
    size_t n = 0, cap = 0;
    char buf[4096];
    size_t have = 0;
    int goodbye = 0;
    char cg[4096] = "";
    for (;;) {
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
                set[n++] = (pid_t)atoi(buf + 2);
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

static void guardian_start(void)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return;
    char marker[128];
    snprintf(marker, sizeof marker, "MKHARNESS_RUN=%s", mkh_run_id());
    pid_t pid = fork();
    if (pid < 0) { close(p[0]); close(p[1]); return; }
    if (pid == 0) {
        signal(SIGINT, SIG_IGN);
        signal(SIGTERM, SIG_IGN);
        signal(SIGHUP, SIG_IGN);
        signal(SIGQUIT, SIG_IGN);
        signal(SIGPIPE, SIG_IGN);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        prctl(PR_SET_NAME, "mkh-guardian");
        /* its own session: a kill of the harness's process group (a CI
         * runner's timeout) must not take the guardian with it */
        setsid();
        int fd = p[0];
        /* keep stderr for diagnostics; nothing else of the host */
        if (fd > 3) syscall(SYS_close_range, 3u, (unsigned)fd - 1, 0u);
        syscall(SYS_close_range, (unsigned)fd + 1, ~0u, 0u);
        guardian_main(fd, marker);
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

void mkh_guardian_watch(pid_t sid)
{
    record_sid(sid);
    if (guardian_fd < 0 && guardian_pid == 0) guardian_start();
    if (guardian_fd < 0) return;
    char line[32];
    int len = snprintf(line, sizeof line, "S %d\n", (int)sid);
    if (write(guardian_fd, line, (size_t)len) < 0) { /* guardian gone: nothing to do */ }
}

static void guardian_stop(void)
{
    if (guardian_fd < 0) return;
    if (write(guardian_fd, "Q\n", 2) < 0) { /* already gone */ }
    close(guardian_fd);
    guardian_fd = -1;
    int st;
    while (waitpid(guardian_pid, &st, 0) < 0 && errno == EINTR) {}
    guardian_pid = 0;
}

void mkh_teardown(int graceful)
{
    in_teardown = 1;
    if (graceful && live) {
        double now = mkh_now();
        for (mkh_proc *p = live; p; p = p->next) {
            mkh_proc_signal(p, p->stop_sig ? p->stop_sig : SIGTERM);
            mkh_proc_signal(p, SIGCONT); /* a paused service must see it */
        }
        /* wait for all leaders (signalled together), each up to its own stop_timeout */
        for (mkh_proc *p = live, *next; p; p = next) {
            next = p->next;
            if (!mkh_proc_wait(p, now + (p->stop_timeout > 0 ? p->stop_timeout : 0)))
                mkh_proc_signal(p, p->kill_sig ? p->kill_sig : SIGKILL);
        }
    }
    /* Kill everything left, reap, and repeat until a pass finds nothing.
     * No /proc scan is needed while we live: every descendant either is in
     * a service's group, or has a living ancestor that is, or was
     * reparented to us (subreaper) - so killing the groups and then our
     * stray children, until there are none, reaches all of them. */
    for (int pass = 0; pass < 2000; pass++) {
        int n = 0;
        for (mkh_proc *p = live; p; p = p->next) {
            mkh_proc_signal(p, SIGKILL);
            n++;
        }
        n += strike_orphans(NULL);
        for (mkh_proc *p = live, *next; p; p = next) {
            next = p->next;
            mkh_proc_wait(p, mkh_now() + 1.0);
        }
        if (n == 0) break;
        mkh_sleep_until(mkh_now() + 0.0005);
    }
    mkh_cg_teardown();
    guardian_stop();
    finish_run_dir();
    in_teardown = 0;
}
