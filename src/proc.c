/* The processes of a run: the live list, reaping, signals, sweeping what a
 * service left, and teardown that leaves nothing behind.
 *
 * Three nets catch every process a run started:
 *  - process groups/sessions: each service is a session leader;
 *  - the MKHARNESS_RUN=<id> marker in the environment;
 *  - the child-subreaper bit: orphaned descendants are reparented to us.
 * (Where cgroup v2 is writable, cgroup.c adds the exact one; guardian.c
 * covers a host that dies abnormally.) A service's leader is never reaped
 * before its group is swept, so its pid and group id cannot pass to a
 * stranger while we may still signal them. */
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
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static mkh_proc *live;          /* doubly linked list of unreaped procs */
static pid_t my_sid;
static pid_t *own_kids;         /* children forked here (popen): not strays */
static size_t nown, capown;
static int in_teardown; /* waits then ignore interrupts */
static double grace_cap = -1;  /* longest graceful wait in teardown; <0: none */
static int hurry;              /* a signal came during teardown: no grace left */
static double teardown_t0;
#define DUPLICATE 0.2

static void span_begin(const mkh_proc *p);

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
    if (!p->start_ticks) p->start_ticks = mkh_start_ticks(p->pid);
    span_begin(p);
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

/* ---- who was alive when: a descendant with no marker at all (it
 * scrubbed its environment) belongs to a service when that service is the
 * only one of the run that was alive at its birth ---- */

typedef struct { pid_t pid; unsigned long long start, end; } span;
static span *spans;
static size_t nspans, capspans;

static void span_begin(const mkh_proc *p)
{
    void *arr = spans;
    if (mkh_grow(&arr, &capspans, nspans + 1, sizeof *spans) != 0) return;
    spans = arr;
    spans[nspans++] = (span){ p->pid, p->start_ticks, 0 };
}

static void span_end(const mkh_proc *p)
{
    for (size_t i = nspans; i-- > 0; )
        if (spans[i].pid == p->pid && spans[i].start == p->start_ticks) {
            if (!spans[i].end) spans[i].end = mkh_ticks_now() + 1;
            return;
        }
}

/* Was p the only service of the run alive when `born` (ticks) came? */
static int sole_parent(const mkh_proc *p, unsigned long long born)
{
    if (!p || !p->start_ticks || born < p->start_ticks) return 0;
    for (size_t i = 0; i < nspans; i++) {
        const span *o = &spans[i];
        if (o->pid == p->pid && o->start == p->start_ticks) continue;
        if (o->start <= born && (!o->end || o->end >= born)) return 0;
    }
    return 1;
}

/* ---- reaping ---- */

static void forget(mkh_proc *p)
{
    p->reaped = 1;
    if (p->pidfd >= 0) close(p->pidfd);
    p->pidfd = -1;
    mkh_proc_unlink(p);
}

int mkh_proc_poll(mkh_proc *p)
{
    if (p->exited) return 1;
    if (p->foreign) { /* its pidfd turns readable when it exits */
        struct pollfd pf = { p->pidfd, POLLIN, 0 };
        if (p->pidfd < 0 || poll(&pf, 1, 0) <= 0) return 0;
        p->exited = 1;
        span_end(p);
        p->status = 0;
        return 1;
    }
    siginfo_t si;
    memset(&si, 0, sizeof si);
    int r;
    /* WNOWAIT: learn the status but leave the zombie, which keeps its pid
     * and group id ours until the sweep */
    do r = waitid(P_PID, (id_t)p->pid, &si, WEXITED | WNOHANG | WNOWAIT); while (r < 0 && errno == EINTR);
    if (r == 0 && si.si_pid == p->pid) {
        p->exited = 1;
        span_end(p);
        p->status = si.si_code == CLD_EXITED ? W_EXITCODE(si.si_status & 0xff, 0)
                                             : W_EXITCODE(0, si.si_status & 0x7f);
        return 1;
    }
    if (r < 0 && errno == ECHILD) { /* someone else reaped it: never signal it again */
        p->exited = 1;
        span_end(p);
        p->status = 0;
        mkh_guardian_forget(p->pid);
        forget(p);
        return 1;
    }
    return 0;
}

void mkh_proc_reap(mkh_proc *p)
{
    if (p->reaped || !mkh_proc_poll(p)) return;
    if (p->reaped) return;
    mkh_guardian_forget(p->pid);
    int st;
    if (!p->foreign) while (waitpid(p->pid, &st, 0) < 0 && errno == EINTR) {}
    forget(p);
}

int mkh_proc_adopt(mkh_proc *p, pid_t pid, mkh_proc *from, char *err, size_t errlen)
{
    char st; pid_t pp, pg, sd;
    unsigned long long ticks = 0;
    if (pid <= 1 || mkh_proc_stat(pid, &st, &pp, &pg, &sd, &ticks) != 0 || st == 'Z' || st == 'X') {
        snprintf(err, errlen, "pid %d is not running", (int)pid);
        return -1;
    }
    int fd = mkh_have_pidfd() ? (int)syscall(SYS_pidfd_open, pid, 0) : -1;
    int child = pp == getpid();
    if (fd < 0 && !child) {
        snprintf(err, errlen, "pid %d is not our child and pidfd_open is unavailable: cannot follow it safely", (int)pid);
        return -1;
    }
    /* the pid file may name a process that died and whose number was given
     * to another since: a start time after the service's own is required */
    if (from && from->start_ticks && ticks < from->start_ticks) {
        if (fd >= 0) close(fd);
        snprintf(err, errlen, "pid %d started before the service did: not its daemon", (int)pid);
        return -1;
    }
    memset(p, 0, sizeof *p);
    p->pid = pid;
    p->pidfd = fd;
    p->foreign = !child;
    p->start_ticks = ticks;
    if (from) {
        p->stop_sig = from->stop_sig;
        p->kill_sig = from->kill_sig;
        p->stop_timeout = from->stop_timeout;
        p->cg_id = from->cg_id; /* the daemon lives in the service's cgroup */
        from->cg_id = 0;
    }
    mkh_proc_link(p);
    if (sd == pid) mkh_guardian_watch(sd, ticks);
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
        if (in_teardown) {
            /* a signal during teardown (a second Ctrl-C, the supervisor's
             * death) means: no more grace. Not within DUPLICATE of the
             * start: a Ctrl-C reaches the host twice at once, directly and
             * forwarded by the supervisor. */
            if (pf[1].revents && mkh_interrupt_drain() > 0 && mkh_now() - teardown_t0 > DUPLICATE)
                hurry = 1;
            if (hurry) return mkh_proc_poll(p);
        } else if (mkh_interrupted()) {
            return 0;
        }
    }
}

int mkh_proc_signal(mkh_proc *p, int sig)
{
    if (p->reaped) { errno = ESRCH; return -1; }
    if (p->foreign) { /* not our child: its group id is not pinned, only the pidfd is safe */
        if (p->exited) { errno = ESRCH; return -1; }
        return (int)syscall(SYS_pidfd_send_signal, p->pidfd, sig, NULL, 0);
    }
    if (kill(-p->pid, sig) == 0) return 0;
    return kill(p->pid, sig);
}

/* ---- pause and resume ---- */

/* Members of process group pgrp not yet where pause (on) or resume (!on)
 * wants them; the first `cap` of them go to out. A shell inside vfork()
 * waits for its stopped child uninterruptibly (D) and cannot stop before
 * it: for a pause that counts as stopped, since it runs no code either. */
static size_t group_late(pid_t pgrp, int on, pid_t *out, size_t cap)
{
    DIR *d = opendir("/proc");
    if (!d) return 0;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!isdigit((unsigned char)e->d_name[0])) continue;
        pid_t pid = (pid_t)atoi(e->d_name);
        char st; pid_t pp, pg, sd;
        if (mkh_proc_stat(pid, &st, &pp, &pg, &sd, NULL) != 0 || pg != pgrp) continue;
        int late = on ? !strchr("TtDZX", st) : st == 'T';
        if (late) {
            if (n < cap) out[n] = pid;
            n++;
        }
    }
    closedir(d);
    return n;
}

/* Without a freezer: signal the group, then watch /proc until every
 * member is stopped (or none is), bounded by the deadline. */
static int group_pause(mkh_proc *p, int on, double timeout, char *err, size_t errlen)
{
    double deadline = mkh_now() + timeout;
    if (mkh_proc_signal(p, on ? SIGSTOP : SIGCONT) != 0) {
        snprintf(err, errlen, "cannot signal process group %d: %s", (int)p->pid, strerror(errno));
        return -1;
    }
    for (;;) {
        pid_t late[8];
        size_t n = group_late(p->pid, on, late, 8);
        if (n == 0) return 0;
        if (mkh_now() >= deadline) {
            int len = snprintf(err, errlen, "%zu process%s of group %d still %s after SIG%s for %.2f s (pid",
                               n, n == 1 ? "" : "es", (int)p->pid, on ? "running" : "stopped",
                               on ? "STOP" : "CONT", timeout);
            for (size_t i = 0; i < n && i < 8 && len > 0 && (size_t)len < errlen; i++)
                len += snprintf(err + len, errlen - (size_t)len, "%s %d", i ? "," : "", (int)late[i]);
            if (len > 0 && (size_t)len < errlen)
                snprintf(err + len, errlen - (size_t)len, "%s)", n > 8 ? ", ..." : "");
            return -1;
        }
        mkh_sleep_until(mkh_now() + 0.001);
    }
}

int mkh_proc_freeze(mkh_proc *p, int on, double timeout, char *err, size_t errlen)
{
    if (p->reaped || mkh_proc_poll(p)) {
        snprintf(err, errlen, "the process has exited");
        return -1;
    }
    if (p->cg_id) {
        /* the freezer reaches every process of the service, also those
         * that left its group or session, and they see no signal */
        char cg[4200];
        mkh_cg_path(p->cg_id, cg, sizeof cg);
        int r = mkh_cg_freeze(cg, on, mkh_now() + timeout);
        if (r == 1) {
            /* a resume also ends a stop sent by hand (signal("STOP")) */
            if (!on) mkh_proc_signal(p, SIGCONT);
            return 0;
        }
        if (r == 0) {
            snprintf(err, errlen, "cgroup %s not %s after %.2f s (cgroup.events)", cg,
                     on ? "frozen" : "thawed", timeout);
            return -1;
        }
        /* no freezer in this kernel: signals do it */
    }
    return group_pause(p, on, timeout, err, errlen);
}

void mkh_proc_thaw(mkh_proc *p)
{
    if (!p->cg_id || p->reaped) return;
    char cg[4200];
    mkh_cg_path(p->cg_id, cg, sizeof cg);
    mkh_cg_freeze(cg, 0, -1);
}

static int is_own_kid(pid_t pid)
{
    for (size_t i = 0; i < nown; i++) if (own_kids[i] == pid) return 1;
    return 0;
}

void mkh_own_child(pid_t pid, int own)
{
    for (size_t i = 0; i < nown; i++)
        if (own_kids[i] == pid) {
            if (!own) own_kids[i] = own_kids[--nown];
            return;
        }
    if (!own) return;
    void *arr = own_kids;
    if (mkh_grow(&arr, &capown, nown + 1, sizeof *own_kids) != 0) return;
    own_kids = arr;
    own_kids[nown++] = pid;
}

/* Our children that are not services, the guardian, nor forked by this
 * process on purpose (popen): descendants of services, or of commands run
 * through a shell, reparented to us after their parent died. */
static int cmp_pid(const void *a, const void *b)
{
    pid_t x = *(const pid_t *)a, y = *(const pid_t *)b;
    return (x > y) - (x < y);
}

static size_t orphans(pid_t *out, size_t cap)
{
    static pid_t kids[4096];
    size_t cap_kids = sizeof kids / sizeof kids[0];
    size_t n = 0, k = mkh_children(kids, cap_kids);
    k += mkh_launch_children(kids + k, cap_kids - k);
    if (k == 0) return 0;
    /* the live pids sorted once: a group of 1000 services stopping would
     * otherwise walk the live list for each child, for each stop */
    static pid_t *known;
    static size_t capknown;
    size_t nknown = 0;
    for (mkh_proc *p = live; p; p = p->next) {
        void *arr = known;
        if (mkh_grow(&arr, &capknown, nknown + 1, sizeof *known) != 0) break;
        known = arr;
        known[nknown++] = p->pid;
    }
    if (nknown) qsort(known, nknown, sizeof *known, cmp_pid);
    for (size_t i = 0; i < k && n < cap; i++) {
        pid_t pid = kids[i];
        if (pid == mkh_guardian_pid() || is_own_kid(pid)) continue;
        if (nknown && bsearch(&pid, known, nknown, sizeof *known, cmp_pid)) continue;
        out[n++] = pid;
    }
    return n;
}

void mkh_reap_strays(void)
{
    /* Called on every pass of a wait: with no child of ours a zombie (one
     * system call, reaping nothing) there is no stray to reap, and the
     * children list need not be read. */
    siginfo_t si;
    memset(&si, 0, sizeof si);
    int r = waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT | __WALL);
    size_t n = 0;
    pid_t kids[512];
    if (!(r == 0 && si.si_pid == 0) && !(r < 0 && errno == ECHILD)) n = orphans(kids, 512);
    for (size_t i = 0; i < n; i++) {
        char st; pid_t pp, pg, sd;
        int ws;
        if (mkh_proc_stat(kids[i], &st, &pp, &pg, &sd, NULL) == 0 && st == 'Z')
            waitpid(kids[i], &ws, WNOHANG);
    }
    /* forget registered children that are gone (their owner waited) */
    for (size_t i = 0; i < nown; ) {
        if (kill(own_kids[i], 0) != 0 && errno == ESRCH) own_kids[i] = own_kids[--nown];
        else i++;
    }
}

/* One pass over our stray children (not in our own session: popen and
 * system children are not ours to judge): reap the dead, SIGKILL the live
 * with their session and group - all of them, or with a token only those
 * carrying it, or carrying no marker at all when `owner` (the token's
 * service) was the only service alive at their birth. Returns how many it
 * acted on. */
static int claims(pid_t pid, const char *token, size_t tlen, const mkh_proc *owner)
{
    int m = mkh_env_match(pid, token, tlen);
    if (m == MKH_ENV_MATCH) return 1;
    if (m != MKH_ENV_NONE || !owner || owner->cg_id) return 0; /* a cgroup already took its own */
    unsigned long long born = mkh_start_ticks(pid);
    return born && sole_parent(owner, born);
}

static int strike_orphans(const char *token, const mkh_proc *owner)
{
    size_t tlen = token ? strlen(token) : 0;
    int acted = 0;
    pid_t kids[512];
    size_t n = orphans(kids, 512);
    for (size_t i = 0; i < n; i++) {
        char st; pid_t pp, pg, sd;
        if (mkh_proc_stat(kids[i], &st, &pp, &pg, &sd, NULL) != 0 || sd == my_sid) continue;
        if (st == 'Z') {
            int ws;
            waitpid(kids[i], &ws, WNOHANG);
        } else if (!tlen || claims(kids[i], token, tlen, owner)) {
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
    /* Kill what is left of the leader's group while the unreaped leader
     * keeps the group id ours, reap the leader, then chase what is still
     * dying: descendants that escaped the group become our children
     * (subreaper) once their parent is gone, and the service token tells
     * whose. */
    int killed = 0;
    if (p->cg_id) { /* exact: everything that ever was in its cgroup */
        char cg[4200];
        mkh_cg_path(p->cg_id, cg, sizeof cg);
        killed += mkh_cg_kill(cg, 2.0);
        p->cg_id = 0;
    }
    int group = !p->foreign && !p->reaped;
    if (p->foreign) { if (mkh_proc_signal(p, SIGKILL) == 0) killed++; }
    else if (group && kill(-p->pid, SIGKILL) == 0) killed++;
    mkh_proc_wait(p, mkh_now() + 2.0);
    mkh_proc_reap(p);
    if (token[0]) {
        double until = mkh_now() + 2.0;
        for (;;) {
            int found = strike_orphans(token, p);
            killed += found;
            /* members of the group still dying keep it in use; signal 0
             * only asks, so a reused group id could cost time, never harm */
            int dying = group && kill(-p->pid, 0) == 0;
            if ((!found && !dying) || mkh_now() > until) break;
            mkh_sleep_until(mkh_now() + 0.0005);
        }
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
        if (pid == self || pid == mkh_guardian_pid()) continue;
        int known = 0;
        for (mkh_proc *p = live; p; p = p->next) known |= p->pid == pid;
        for (size_t i = 0; i < n; i++) known |= out[i] == pid;
        if (known) continue;
        char st; pid_t pp, pg, sd;
        if (mkh_proc_stat(pid, &st, &pp, &pg, &sd, NULL) != 0 || st == 'Z') continue;
        if (mkh_has_marker(pid, marker, mlen)) out[n++] = pid;
    }
    closedir(d);
    return n;
}

#define QUIET 0.01 /* seconds without a find that end teardown's kill passes */

void mkh_teardown_grace_cap(double seconds) { grace_cap = seconds; }

void mkh_teardown(int graceful)
{
    mkh_launch_settle(); /* a process still starting is ended with the others */
    in_teardown = 1;
    teardown_t0 = mkh_now();
    mkh_interrupt_drain(); /* the signal that began it, if any, is handled */
    if (graceful && live) {
        double now = mkh_now();
        for (mkh_proc *p = live; p; p = p->next) {
            mkh_proc_signal(p, p->stop_sig ? p->stop_sig : SIGTERM);
            /* a paused service must see it: frozen, it would not */
            mkh_proc_thaw(p);
            mkh_proc_signal(p, SIGCONT);
        }
        /* wait for all leaders (signalled together), each up to its own
         * stop_timeout (capped when the run is out of time) */
        for (mkh_proc *p = live, *next; p; p = next) {
            next = p->next;
            double grace = p->stop_timeout > 0 ? p->stop_timeout : 0;
            if (grace_cap >= 0 && grace > grace_cap) grace = grace_cap;
            if (hurry || !mkh_proc_wait(p, now + grace))
                mkh_proc_signal(p, p->kill_sig ? p->kill_sig : SIGKILL);
        }
    }
    /* Kill everything left, reap, and repeat until a pass finds nothing.
     * No /proc scan is needed while we live: every descendant either is in
     * a service's group, or has a living ancestor that is, or was
     * reparented to us (subreaper) - so killing the groups and then our
     * stray children, until there are none, reaches all of them. */
    double last_found = -1;
    for (int pass = 0; pass < 20000; pass++) {
        int n = 0;
        for (mkh_proc *p = live; p; p = p->next) {
            mkh_proc_signal(p, SIGKILL);
            n++;
        }
        n += strike_orphans(NULL, NULL);
        for (mkh_proc *p = live, *next; p; p = next) {
            next = p->next;
            if (mkh_proc_wait(p, mkh_now() + 1.0)) mkh_proc_reap(p);
        }
        /* processes die and get reparented to us a moment after SIGKILL:
         * once anything was killed, only a quiet spell means none is left */
        double now = mkh_now();
        if (n > 0) last_found = now;
        else if (last_found < 0 || now - last_found > QUIET) break;
        mkh_sleep_until(now + 0.0005);
    }
    mkh_cg_teardown();
    mkh_guardian_stop();
    mkh_run_dir_finish();
    in_teardown = 0;
}
