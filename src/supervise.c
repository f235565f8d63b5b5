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
static pid_t my_sid;
static pid_t *own_kids;         /* children forked here (popen): not strays */
static size_t nown, capown;
static int in_teardown; /* waits then ignore interrupts */
static double grace_cap = -1;  /* longest graceful wait in teardown; <0: none */
static int hurry;              /* a signal came during teardown: no grace left */
static double teardown_t0;
#define DUPLICATE 0.2
static pid_t supervisor_pid;

void mkh_set_supervisor(pid_t pid) { supervisor_pid = pid; }

static void span_begin(const mkh_proc *p);

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

/* ---- /proc scanning ---- */

/* Fields of /proc/PID/stat after the command: state, ppid, pgrp, session,
 * and (when ticks is not NULL) the start time. */
static int proc_stat_ex(pid_t pid, char *state, pid_t *ppid, pid_t *pgrp, pid_t *sid,
                        unsigned long long *ticks)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (mkh_read_small(path, buf, sizeof buf) <= 0) return -1;
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    int a, b, c;
    if (sscanf(p + 2, "%c %d %d %d", state, &a, &b, &c) != 4) return -1;
    *ppid = a; *pgrp = b; *sid = c;
    if (ticks) {
        /* field 22; we are at field 3 */
        char *q = p + 2;
        for (int f = 3; f < 22 && q; f++) { q = strchr(q, ' '); if (q) q++; }
        if (!q || sscanf(q, "%llu", ticks) != 1) return -1;
    }
    return 0;
}

static int proc_stat(pid_t pid, char *state, pid_t *ppid, pid_t *pgrp, pid_t *sid)
{
    return proc_stat_ex(pid, state, ppid, pgrp, sid, NULL);
}

unsigned long long mkh_start_ticks(pid_t pid)
{
    char st; pid_t pp, pg, sd;
    unsigned long long t = 0;
    if (proc_stat_ex(pid, &st, &pp, &pg, &sd, &t) != 0) return 0;
    return t;
}

/* What /proc/PID/environ says of a marker "KEY=VALUE". A nested run's
 * services keep the tokens of the runs around it in MKHARNESS_OUTER
 * ("run/name" words), so an outer run finds them too: a run id matches the
 * words "ID/...", a service token matches itself. */
enum { ENV_NONE, ENV_OTHER, ENV_MATCH };

static int outer_has(const char *words, size_t len, const char *value, size_t vlen, int is_run)
{
    for (size_t i = 0; i < len; ) {
        size_t j = i;
        while (j < len && words[j] != ' ') j++;
        size_t wl = j - i;
        if (wl == vlen && !memcmp(words + i, value, vlen)) return 1;
        if (is_run && wl > vlen && words[i + vlen] == '/' && !memcmp(words + i, value, vlen)) return 1;
        i = j + 1;
    }
    return 0;
}

/* ENV_MATCH: carries the marker; ENV_OTHER: carries some run's marker but
 * not this one; ENV_NONE: no marker at all (a scrubbed environment) */
static int env_match(pid_t pid, const char *marker, size_t mlen)
{
    static const char run_key[] = "MKHARNESS_RUN=", outer_key[] = "MKHARNESS_OUTER=";
    const char *eq = memchr(marker, '=', mlen);
    if (!eq) return ENV_NONE;
    const char *value = eq + 1;
    size_t vlen = mlen - (size_t)(value - marker);
    int is_run = !strncmp(marker, run_key, sizeof run_key - 1);
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/environ", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ENV_OTHER; /* gone or unreadable: claim nothing */
    /* environ can be large; scan it in chunks, entries are NUL-separated */
    static char buf[65536];
    size_t have = 0;
    int found = ENV_NONE;
    for (;;) {
        ssize_t n = read(fd, buf + have, sizeof buf - have);
        if (n <= 0) break;
        have += (size_t)n;
        size_t start = 0;
        for (size_t i = 0; i < have && found != ENV_MATCH; i++) {
            if (buf[i] != '\0') continue;
            const char *e = buf + start;
            size_t el = i - start;
            if (el == mlen && !memcmp(e, marker, mlen)) found = ENV_MATCH;
            else if (el >= sizeof outer_key - 1 && !memcmp(e, outer_key, sizeof outer_key - 1)) {
                found = outer_has(e + sizeof outer_key - 1, el - (sizeof outer_key - 1), value, vlen, is_run)
                        ? ENV_MATCH : ENV_OTHER;
            } else if (el >= sizeof run_key - 1 && !memcmp(e, run_key, sizeof run_key - 1)) {
                found = ENV_OTHER;
            }
            start = i + 1;
        }
        if (found == ENV_MATCH) break;
        if (start == 0 && have == sizeof buf) have = 0; /* absurd entry: skip */
        else { memmove(buf, buf + start, have - start); have -= start; }
    }
    close(fd);
    return found;
}

static int has_marker(pid_t pid, const char *marker, size_t mlen)
{
    return env_match(pid, marker, mlen) == ENV_MATCH;
}

/* ---- who was alive when: a descendant with no marker at all (it
 * scrubbed its environment) belongs to a service when that service is the
 * only one of the run that was alive at its birth ---- */

typedef struct { pid_t pid; unsigned long long start, end; } span;
static span *spans;
static size_t nspans, capspans;

static unsigned long long ticks_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    long hz = sysconf(_SC_CLK_TCK);
    return (unsigned long long)ts.tv_sec * (unsigned long long)hz +
           (unsigned long long)ts.tv_nsec / (1000000000ULL / (unsigned long long)hz);
}

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
            if (!spans[i].end) spans[i].end = ticks_now() + 1;
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
        if (pid == self || pid == guardian_pid || pid == 1) continue;
        /* pin the process first: what is checked below is then the process
         * the signal reaches, even if the number is reused meanwhile */
        int fd = (int)syscall(SYS_pidfd_open, pid, 0);
        if (fd < 0 && errno != ENOSYS) continue; /* gone */
        char st; pid_t pp, pg, sd;
        if (proc_stat(pid, &st, &pp, &pg, &sd) == 0 && st != 'Z' && st != 'X') {
            int hit = in_sessions(sd, set, n) || in_sessions(pg, set, n) ||
                      (mlen && has_marker(pid, marker, mlen));
            if (hit && (fd >= 0 ? syscall(SYS_pidfd_send_signal, fd, sig, NULL, 0) : kill(pid, sig)) == 0) count++;
        }
        if (fd >= 0) close(fd);
    }
    closedir(d);
    return count;
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
    if (pid <= 1 || proc_stat_ex(pid, &st, &pp, &pg, &sd, &ticks) != 0 || st == 'Z' || st == 'X') {
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
        if (proc_stat(pid, &st, &pp, &pg, &sd) != 0 || pg != pgrp) continue;
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
        int known = pid == guardian_pid || is_own_kid(pid);
        for (mkh_proc *p = live; p && !known; p = p->next) known = p->pid == pid;
        if (!known) out[n++] = pid;
    }
    return n;
}

void mkh_reap_strays(void)
{
    pid_t kids[512];
    size_t n = orphans(kids, 512);
    for (size_t i = 0; i < n; i++) {
        char st; pid_t pp, pg, sd;
        int ws;
        if (proc_stat(kids[i], &st, &pp, &pg, &sd) == 0 && st == 'Z')
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
    int m = env_match(pid, token, tlen);
    if (m == ENV_MATCH) return 1;
    if (m != ENV_NONE || !owner || owner->cg_id) return 0; /* a cgroup already took its own */
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
        if (proc_stat(kids[i], &st, &pp, &pg, &sd) != 0 || sd == my_sid) continue;
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
     * keeps the group id ours, then chase descendants that escaped the
     * group: once their parent is gone they are our children (subreaper),
     * and the service token tells whose. Reap the leader last. */
    int killed = 0;
    if (p->cg_id) { /* exact: everything that ever was in its cgroup */
        char cg[4200];
        mkh_cg_path(p->cg_id, cg, sizeof cg);
        killed += mkh_cg_kill(cg, 2.0);
        p->cg_id = 0;
    }
    if (p->foreign) { if (mkh_proc_signal(p, SIGKILL) == 0) killed++; }
    else if (!p->reaped && kill(-p->pid, SIGKILL) == 0) killed++;
    if (token[0]) {
        double until = mkh_now() + 2.0;
        for (;;) {
            int found = strike_orphans(token, p);
            killed += found;
            if (!found || mkh_now() > until) break;
            mkh_sleep_until(mkh_now() + 0.0005);
        }
    }
    mkh_proc_wait(p, mkh_now() + 2.0);
    mkh_proc_reap(p);
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

static void guardian_start(void)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return;
    char marker[128];
    snprintf(marker, sizeof marker, "MKHARNESS_RUN=%s", mkh_run_id());
    pid_t host = getpid(), sup = supervisor_pid;
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
        /* pidfds pin who the host and its supervisor are; the supervisor
         * counts only while it is still the host's parent */
        int host_fd = (int)syscall(SYS_pidfd_open, host, 0);
        if (host_fd >= 0 && getppid() != host) { close(host_fd); host_fd = -1; }
        int sup_fd = -1;
        if (sup > 0 && host_fd >= 0) {
            sup_fd = (int)syscall(SYS_pidfd_open, sup, 0);
            char st; pid_t pp = 0, pg, sd;
            if (sup_fd >= 0 && (proc_stat(host, &st, &pp, &pg, &sd) != 0 || pp != sup)) {
                close(sup_fd);
                sup_fd = -1;
            }
        }
        guardian_main(fd, marker, host_fd, sup_fd);
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

void mkh_guardian_watch(pid_t sid, unsigned long long start_ticks)
{
    if (guardian_fd < 0 && guardian_pid == 0) guardian_start();
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

#define QUIET 0.01 /* seconds without a find that end teardown's kill passes */

void mkh_teardown_grace_cap(double seconds) { grace_cap = seconds; }

void mkh_teardown(int graceful)
{
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
    guardian_stop();
    finish_run_dir();
    in_teardown = 0;
}
