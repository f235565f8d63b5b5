/* Spawning: vfork + exec with an exec-status pipe, so that a command that
 * cannot run is reported at once with the step that failed, never as a
 * timeout. Between vfork and exec only async-signal-safe calls are made:
 * everything (argv, envp, PATH candidates) is prepared before the vfork.
 * vfork, not fork: the child borrows the harness's memory until its exec
 * instead of copying its page tables, and the harness takes no
 * copy-on-write faults afterwards (a few ms per spawn on a large heap in
 * a VM). The child therefore writes nothing the parent reads, except
 * errno, and makes raw system calls where glibc would touch the
 * process's shared state (setuid and friends signal every thread). */
#define _GNU_SOURCE
#include "mkh.h"
#include "spawn_steps.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

enum { STAGE_SETUP = 1, STAGE_FDS, STAGE_CHDIR, STAGE_EXEC, STAGE_SETGROUPS, STAGE_SETGID, STAGE_SETUID,
       STAGE_NS };

MKH_CHILD_CODE static void child_fail(int rep, int stage, int err)
{
    struct mkh_exec_report r = { stage, err };
    ssize_t n = write(rep, &r, sizeof r);
    (void)n;
    _exit(127);
}

/* Move fd to a slot >= 10 so that dup2 onto 0..2 cannot clobber a source. */
MKH_CHILD_CODE static int lift(int fd)
{
    return fd < 0 ? -1 : fcntl(fd, F_DUPFD, 10);
}

MKH_CHILD_CODE static void child(const mkh_spawn_opts *o, char **cands, size_t ncand, pid_t parent, int rep,
                  int drop_groups)
{
    /* A service must not outlive a harness that died without teardown.
     * The guardian handles descendants; this makes the leader go at once. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
        _exit(127);
    if (setsid() < 0) child_fail(rep, STAGE_SETUP, errno);
    /* join our cgroup before anything can fork: no descendant escapes it */
    if (o->fd_cgroup >= 0 && write(o->fd_cgroup, "0", 1) != 1) child_fail(rep, STAGE_SETUP, errno);
    if (o->ns) {
        /* entering a mount namespace moves us to its root: come back to
         * the same path there */
        char here[4096];
        int have_cwd = getcwd(here, sizeof here) != NULL;
        if ((o->ns[0] >= 0 && setns(o->ns[0], CLONE_NEWUSER) != 0) || setns(o->ns[1], CLONE_NEWNET) != 0 ||
            setns(o->ns[2], CLONE_NEWNS) != 0)
            child_fail(rep, STAGE_NS, errno);
        if (have_cwd && chdir(here) != 0 && !o->cwd) child_fail(rep, STAGE_NS, errno);
        /* new credentials clear the parent-death signal */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(127);
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; s++) sigaction(s, &sa, NULL); /* KILL/STOP fail: fine */

    int in = lift(o->fd_in), out = lift(o->fd_out), er = lift(o->fd_err);
    if (in < 0 || out < 0 || er < 0) child_fail(rep, STAGE_FDS, errno);
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(er, 2) < 0)
        child_fail(rep, STAGE_FDS, errno);
    /* Only 0, 1, 2 and the report pipe (close-on-exec) survive. */
    if (rep > 3) syscall(SYS_close_range, 3u, (unsigned)rep - 1, 0u);
    syscall(SYS_close_range, (unsigned)rep + 1, ~0u, 0u);

    /* Groups before the gid and both before the uid: once the uid is
     * dropped, nothing else may change. */
    if (o->ids) {
        if (drop_groups && syscall(SYS_setgroups, (size_t)o->ids->ngroups, o->ids->groups) != 0)
            child_fail(rep, STAGE_SETGROUPS, errno);
        if (syscall(SYS_setgid, o->ids->gid) != 0) child_fail(rep, STAGE_SETGID, errno);
        if (syscall(SYS_setuid, o->ids->uid) != 0) child_fail(rep, STAGE_SETUID, errno);
        /* a change of credentials clears the parent-death signal */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(127);
    }

    /* after the switch: a directory the service's user cannot enter fails here */
    if (o->cwd && chdir(o->cwd) != 0) child_fail(rep, STAGE_CHDIR, errno);

    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    int best = ENOENT;
    for (size_t i = 0; i < ncand; i++) {
        execve(cands[i], o->argv, o->envp);
        /* like execvp: a permission problem is more telling than "not found" */
        if (errno != ENOENT && errno != ENOTDIR && errno != ESTALE) best = errno;
    }
    /* restore signals we may have unblocked before reporting */
    child_fail(rep, STAGE_EXEC, best);
}

/* Candidate paths for argv[0], computed before the fork. */
static char **candidates(const char *file, const char *path, size_t *n)
{
    *n = 0;
    if (strchr(file, '/')) {
        char **c = malloc(2 * sizeof *c);
        if (!c) return NULL;
        c[0] = strdup(file);
        c[1] = NULL;
        *n = 1;
        return c;
    }
    if (!path || !*path) path = "/usr/local/bin:/usr/bin:/bin";
    size_t parts = 1;
    for (const char *p = path; *p; p++) parts += (*p == ':');
    char **c = calloc(parts + 1, sizeof *c);
    if (!c) return NULL;
    const char *p = path;
    for (;;) {
        const char *e = strchr(p, ':');
        size_t dl = e ? (size_t)(e - p) : strlen(p);
        char *s = malloc(dl + strlen(file) + 3);
        if (!s) break;
        if (dl == 0) sprintf(s, "./%s", file);
        else sprintf(s, "%.*s/%s", (int)dl, p, file);
        c[(*n)++] = s;
        if (!e) break;
        p = e + 1;
    }
    return c;
}

static void free_candidates(char **c, size_t n)
{
    if (!c) return;
    for (size_t i = 0; i < n; i++) free(c[i]);
    free(c);
}

static void describe(const mkh_spawn_opts *o, struct mkh_exec_report r, char *err, size_t errlen)
{
    const char *cmd = o->argv[0];
    const char *step = r.stage == STAGE_SETGROUPS ? "setgroups" : r.stage == STAGE_SETGID ? "setgid" : "setuid";
    switch (r.stage) {
    case STAGE_SETGROUPS:
    case STAGE_SETGID:
    case STAGE_SETUID:
        if (r.err == EPERM)
            snprintf(err, errlen, "cannot run as %s: operation not permitted (%s); only root can run a "
                     "service as another user or group (this harness runs as uid %d)",
                     o->who ? o->who : "another user", step, (int)geteuid());
        else
            snprintf(err, errlen, "cannot run as %s: %s: %s", o->who ? o->who : "another user", step,
                     strerror(r.err));
        break;
    case STAGE_CHDIR:
        snprintf(err, errlen, "cannot change directory to '%s': %s", o->cwd, strerror(r.err));
        break;
    case STAGE_EXEC:
        if (r.err == ENOENT && !strchr(cmd, '/'))
            snprintf(err, errlen, "command not found: '%s' (searched PATH=%s)", cmd,
                     o->path && *o->path ? o->path : "/usr/local/bin:/usr/bin:/bin");
        else if (r.err == ENOENT)
            snprintf(err, errlen, "no such file: '%s'", cmd);
        else if (r.err == EACCES)
            snprintf(err, errlen, "cannot execute '%s': permission denied (not executable, or a directory)", cmd);
        else if (r.err == ENOEXEC)
            snprintf(err, errlen, "cannot execute '%s': not an executable format (a script without '#!'?)", cmd);
        else
            snprintf(err, errlen, "cannot execute '%s': %s", cmd, strerror(r.err));
        break;
    case STAGE_NS:
        snprintf(err, errlen, "cannot enter %s for '%s': %s", o->where ? o->where : "the lab", cmd,
                 strerror(r.err));
        break;
    case STAGE_FDS:
        snprintf(err, errlen, "cannot set up stdio for '%s': %s", cmd, strerror(r.err));
        break;
    default:
        snprintf(err, errlen, "cannot start '%s': %s", cmd, strerror(r.err));
    }
}

/* Are ids' groups exactly the ones we hold (as sets)? */
static int same_groups(const mkh_ids *ids)
{
    int n = getgroups(0, NULL);
    if (n < 0) return 0;
    gid_t *have = malloc(((size_t)n + 1) * sizeof *have);
    if (!have) return 0;
    n = getgroups(n, have);
    int same = n >= 0;
    for (size_t i = 0; same && i < ids->ngroups; i++) {
        int found = 0;
        for (int j = 0; j < n && !found; j++) found = have[j] == ids->groups[i];
        /* the kernel may leave the primary group out of the list */
        same = found || ids->groups[i] == getegid();
    }
    for (int j = 0; same && j < n; j++) {
        int found = 0;
        for (size_t i = 0; i < ids->ngroups && !found; i++) found = have[j] == ids->groups[i];
        same = found;
    }
    free(have);
    return same;
}

int mkh_have_pidfd(void)
{
    static int have = -1;
    if (have < 0) {
        const char *off = getenv("MKHARNESS_PIDFD"); /* "0": test the fallback */
        int fd = off && !strcmp(off, "0") ? -1 : (int)syscall(SYS_pidfd_open, getpid(), 0);
        have = fd >= 0;
        if (fd >= 0) close(fd);
        else mkh_exit_fd(); /* before any fork, so no exit is missed */
    }
    return have;
}

/* ---- one spawn in three steps: prepare on the run's thread (PATH
 * candidates, the report pipe, the guardian: the harness's state), launch
 * on any thread (the clone and the wait for the exec report: it touches
 * nothing but its job), finish on the run's thread (the guardian, the
 * pidfd). mkh_spawn takes the three at once; a launch (launch.c) runs
 * the middle one on the spawn thread. ---- */

MKH_CHILD_CODE static int child_main(void *arg)
{
    const mkh_spawn_job *j = arg;
    child(j->o, j->cands, j->ncand, j->parent, j->rep[1], j->drop_groups);
    return 127; /* not reached: child() execs or exits */
}

void mkh_job_init(mkh_spawn_job *j)
{
    memset(j, 0, sizeof *j);
    j->rep[0] = j->rep[1] = -1;
    j->pid = -1;
}

/* What a job holds before its launch, or after one that never came. */
void mkh_job_drop(mkh_spawn_job *j)
{
    free_candidates(j->cands, j->ncand);
    j->cands = NULL;
    for (int i = 0; i < 2; i++)
        if (j->rep[i] >= 0) close(j->rep[i]);
    j->rep[0] = j->rep[1] = -1;
}

int mkh_job_prepare(mkh_spawn_job *j, const mkh_spawn_opts *o, char *err, size_t errlen)
{
    mkh_have_pidfd();
    j->o = o;
    /* setgroups needs privilege even to set the list we have: a harness
     * that is not root and asks for its own identity keeps its groups */
    j->drop_groups = o->ids && !(geteuid() != 0 && same_groups(o->ids));
    j->cands = candidates(o->argv[0], o->path, &j->ncand);
    if (!j->cands) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* the read end is close-on-exec and the child closes every fd but
     * 0-2 and its write end before the exec */
    if (pipe2(j->rep, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        j->rep[0] = j->rep[1] = -1;
        mkh_job_drop(j);
        return -1;
    }
    j->parent = getpid();
    mkh_guardian_ensure();
    return 0;
}

/* The clone, then the wait until the child has exec'd or reported why it
 * could not. On whichever thread: vfork suspends only the calling thread,
 * and the child reads only the job and writes only its own stack and the
 * calling thread's errno. */
void mkh_job_launch(mkh_spawn_job *j)
{
    /* Block signals across the clone so that the child never runs our
     * handlers (they would run on our memory); the child resets the mask. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    /* a child entering a lab's user namespace gets a copy of our memory:
     * the kernel refuses that setns to a process sharing its address space */
    j->pid = mkh_vfork_call(child_main, j, j->o->ns == NULL || j->o->ns[0] < 0);
    j->fork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(j->rep[1]);
    j->rep[1] = -1;
    if (j->pid >= 0) {
        j->ticks = mkh_start_ticks(j->pid);
        ssize_t n;
        do n = read(j->rep[0], &j->r, sizeof j->r); while (n < 0 && errno == EINTR);
        j->failed = n == (ssize_t)sizeof j->r;
    }
    close(j->rep[0]);
    j->rep[0] = -1;
}

int mkh_job_finish(mkh_spawn_job *j, pid_t *pid_out, int *pidfd_out, unsigned long long *ticks_out, char *err,
                   size_t errlen)
{
    mkh_job_drop(j);
    if (j->pid < 0) {
        snprintf(err, errlen, "vfork: %s", strerror(j->fork_errno));
        return -1;
    }
    pid_t pid = j->pid;
    int st;
    if (j->failed) {
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
        describe(j->o, j->r, err, errlen);
        return -1;
    }
    /* The guardian learns the session now, once the child has exec'd. A
     * harness killed before that leaves a leader that dies of its
     * parent-death signal, and descendants that carry the run's marker and
     * sit in its cgroup, which the guardian (started before the clone)
     * already knows. */
    mkh_guardian_watch(pid, j->ticks);
    int pidfd = mkh_have_pidfd() ? (int)syscall(SYS_pidfd_open, pid, 0) : -1;
    if (pidfd < 0 && mkh_have_pidfd()) {
        snprintf(err, errlen, "pidfd_open: %s", strerror(errno));
        kill(pid, SIGKILL);
        mkh_guardian_forget(pid);
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
        return -1;
    }
    *pid_out = pid;
    *pidfd_out = pidfd;
    if (ticks_out) *ticks_out = j->ticks;
    return 0;
}

int mkh_spawn(const mkh_spawn_opts *o, pid_t *pid_out, int *pidfd_out, unsigned long long *ticks_out, char *err,
              size_t errlen)
{
    mkh_spawn_job j;
    mkh_job_init(&j);
    if (mkh_job_prepare(&j, o, err, errlen) != 0) return -1;
    mkh_job_launch(&j);
    return mkh_job_finish(&j, pid_out, pidfd_out, ticks_out, err, errlen);
}

/* ---- starting a process of the run: stdio, cgroup, spawn, live list ---- */

static int open_stream(const mkh_io *io, int std, int *fd, char *err, size_t errlen)
{
    const char *what = "/dev/null";
    if (io->mode == MKH_IO_INHERIT) {
        what = "the harness's own";
        *fd = fcntl(std, F_DUPFD_CLOEXEC, 3);
    } else if (io->mode == MKH_IO_FILE && io->path) {
        /* a capture file: O_APPEND so that a daemon still writing through an
         * old descriptor after a restart's truncation cannot leave holes;
         * 0600: the run directory may be traversable by a service's user */
        what = io->path;
        *fd = open(io->path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    } else {
        *fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    }
    if (*fd >= 0) return 0;
    snprintf(err, errlen, "cannot open %s for %s: %s", what, std == 1 ? "stdout" : "stderr", strerror(errno));
    return -1;
}

static int stdin_fd(const mkh_start_opts *o, char *err, size_t errlen)
{
    int fd;
    if (!o->stdin_data) {
        fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    } else {
        /* a memfd instead of a pipe: writing can never block on a child
         * that does not read */
        fd = memfd_create("mkharness-stdin", MFD_CLOEXEC);
        size_t off = 0;
        while (fd >= 0 && off < o->stdin_len) {
            ssize_t n = write(fd, o->stdin_data + off, o->stdin_len - off);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) { close(fd); fd = -1; break; }
            off += (size_t)n;
        }
        if (fd >= 0) lseek(fd, 0, SEEK_SET);
    }
    if (fd < 0) snprintf(err, errlen, "cannot prepare stdin: %s", strerror(errno));
    return fd;
}

/* The child's stdio and its cgroup, into s. 0, or -1 with err: then
 * mkh_start_close() releases what was made. */
int mkh_start_open(const mkh_start_opts *o, mkh_spawn_opts *s, int *cg_id, char *err, size_t errlen)
{
    static int cg_seq;
    mkh_supervise_init();
    *cg_id = 0;
    s->fd_cgroup = -1;
    if (mkh_cg_enabled()) {
        s->fd_cgroup = mkh_cg_create(++cg_seq);
        if (s->fd_cgroup >= 0) *cg_id = cg_seq;
    }
    s->fd_out = s->fd_err = -1;
    s->fd_in = stdin_fd(o, err, errlen);
    if (s->fd_in >= 0 && open_stream(&o->out, 1, &s->fd_out, err, errlen) == 0 &&
        open_stream(&o->err, 2, &s->fd_err, err, errlen) == 0)
        return 0;
    return -1;
}

/* Once the child has its copies (or there is none: failed): the fds go,
 * and a failed start's cgroup with whatever may have entered it. */
void mkh_start_close(mkh_spawn_opts *s, int cg_id, int failed)
{
    int *fds[] = { &s->fd_in, &s->fd_out, &s->fd_err, &s->fd_cgroup };
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++) {
        if (*fds[i] >= 0) close(*fds[i]);
        *fds[i] = -1;
    }
    if (failed && cg_id) {
        char cg[4200];
        mkh_cg_path(cg_id, cg, sizeof cg);
        mkh_cg_kill(cg, 1.0);
    }
}

void mkh_proc_init(mkh_proc *p, int stop_sig, int kill_sig, double stop_timeout)
{
    memset(p, 0, sizeof *p);
    p->pidfd = -1;
    p->exited = 1; /* until spawned: nothing to kill */
    p->stop_sig = stop_sig;
    p->kill_sig = kill_sig;
    p->stop_timeout = stop_timeout;
}

void mkh_proc_started(mkh_proc *p, pid_t pid, int pidfd, unsigned long long ticks, int cg_id)
{
    p->pid = pid;
    p->pidfd = pidfd;
    p->exited = 0;
    p->start_ticks = ticks;
    p->cg_id = cg_id;
    mkh_proc_link(p);
}

int mkh_proc_start(mkh_proc *p, mkh_start_opts *o, char *err, size_t errlen)
{
    mkh_spawn_opts *s = &o->spawn;
    mkh_proc_init(p, o->stop_sig, o->kill_sig, o->stop_timeout);
    int cg_id;
    int r = mkh_start_open(o, s, &cg_id, err, errlen);
    if (r == 0) {
        pid_t pid;
        int pidfd;
        unsigned long long ticks = 0;
        r = mkh_spawn(s, &pid, &pidfd, &ticks, err, errlen);
        if (r == 0) mkh_proc_started(p, pid, pidfd, ticks, cg_id);
    }
    mkh_start_close(s, cg_id, r != 0);
    return r;
}
