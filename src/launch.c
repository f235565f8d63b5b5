/* Starting a process off the run's thread (mkh_proc_start_async, mkh.h).
 * The clone and the wait for the exec report (0.6 ms on an idle machine,
 * tens of ms on a loaded one, however long the child's steps before its
 * exec take) run on one spawn thread serving a queue, so that the run's
 * thread goes on waiting, and firing due timers, through its wait loop.
 * The thread is started on first use with every signal blocked, and
 * never ends: a child's parent-death signal follows the thread that
 * created it, not the process. Everything else (the options, copied; the
 * stdio, the cgroup, the PATH candidates, the guardian; then the pidfd
 * and the live list) stays on the run's thread (spawn.c's steps). A
 * launch is handed over whole: the spawn thread touches a queued launch
 * only to run it, and never again once it is over. */
#define _GNU_SOURCE
#include "mkh.h"
#include "spawn_steps.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

enum { L_QUEUED, L_RUNNING, L_DONE, L_CANCELLED };

struct mkh_launch {
    mkh_spawn_job job;
    mkh_spawn_opts spawn;      /* the child's options: the copies below */
    char **argv, **envp;
    char *path, *cwd, *who, *where;
    mkh_ids ids;               /* a copy, its groups too */
    int ns[3];                 /* duplicates: a lab closed meanwhile cannot take them */
    int stop_sig, kill_sig;
    double stop_timeout;
    int cg_id;
    int done_fd;               /* eventfd, readable once the launch is over */
    int state;                 /* L_*: under q_lock */
    struct mkh_launch *qnext;  /* the spawn thread's queue: under q_lock */
    struct mkh_launch *prev, *next; /* not finished yet: the run's thread's */
    int listed;
    int settled;               /* teardown came first: its process (if any) is p */
    mkh_proc p;
};

static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_cond = PTHREAD_COND_INITIALIZER;
static mkh_launch *q_head, *q_tail;
static pid_t spawner_tid;      /* under q_lock; 0 until the thread runs */
static int spawner_up;         /* the run's thread's, as the rest below */
static mkh_launch *unfinished;

static void *spawner_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&q_lock);
    spawner_tid = (pid_t)syscall(SYS_gettid);
    for (;;) {
        while (!q_head) pthread_cond_wait(&q_cond, &q_lock);
        mkh_launch *l = q_head;
        q_head = l->qnext;
        if (!q_head) q_tail = NULL;
        l->state = L_RUNNING;
        pthread_mutex_unlock(&q_lock);
        mkh_job_launch(&l->job);
        pthread_mutex_lock(&q_lock);
        /* under the lock: once the run's thread sees L_DONE it may close
         * the eventfd and free the launch */
        l->state = L_DONE;
        uint64_t one = 1;
        if (write(l->done_fd, &one, sizeof one) < 0) { /* an eventfd far from full: cannot fail */ }
    }
    return NULL;
}

static int spawner_start(char *err, size_t errlen)
{
    if (spawner_up) return 0;
    /* The thread runs this file's code until the process ends: a module
     * (core.so in a stock lua) must never be unloaded under it. */
    Dl_info info;
    if (dladdr((void *)spawner_main, &info) && info.dli_fname)
        dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
    /* signals are for the main thread: its waits must be the ones cut
     * short; a child inherits the full mask and resets it before its exec */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    int r = pthread_create(&t, &a, spawner_main, NULL);
    pthread_attr_destroy(&a);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r != 0) {
        snprintf(err, errlen, "cannot start the spawn thread: %s", strerror(r));
        return -1;
    }
    pthread_setname_np(t, "mkh-spawn"); /* to tell it in ps and /proc */
    spawner_up = 1;
    return 0;
}

static char **copy_vector(char *const *v)
{
    size_t n = 0;
    while (v[n]) n++;
    char **c = calloc(n + 1, sizeof *c);
    for (size_t i = 0; c && i < n; i++) {
        c[i] = strdup(v[i]);
        if (!c[i]) {
            for (size_t k = 0; k < i; k++) free(c[k]);
            free(c);
            c = NULL;
        }
    }
    return c;
}

static void free_vector(char **v)
{
    if (!v) return;
    for (char **p = v; *p; p++) free(*p);
    free(v);
}

static int copy_string(const char *s, char **out)
{
    *out = s ? strdup(s) : NULL;
    return s && !*out ? -1 : 0;
}

/* The caller's options as the launch's own: the caller's strings (Lua's)
 * may go while the child still reads them. */
static int copy_spawn_opts(mkh_launch *l, const mkh_spawn_opts *o, char *err, size_t errlen)
{
    mkh_spawn_opts *s = &l->spawn;
    memset(s, 0, sizeof *s);
    s->fd_in = s->fd_out = s->fd_err = s->fd_cgroup = -1;
    l->argv = copy_vector(o->argv);
    l->envp = copy_vector(o->envp);
    int bad = !l->argv || !l->envp || copy_string(o->path, &l->path) || copy_string(o->cwd, &l->cwd) ||
              copy_string(o->who, &l->who) || copy_string(o->where, &l->where);
    if (!bad && o->ids) {
        l->ids = *o->ids;
        l->ids.groups = malloc((o->ids->ngroups + 1) * sizeof *l->ids.groups);
        if (l->ids.groups) memcpy(l->ids.groups, o->ids->groups, o->ids->ngroups * sizeof *l->ids.groups);
        else bad = 1;
        s->ids = &l->ids;
    }
    if (bad) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->argv = l->argv;
    s->envp = l->envp;
    s->path = l->path;
    s->cwd = l->cwd;
    s->who = l->who;
    s->where = l->where;
    if (o->ns) {
        for (int i = 0; i < 3; i++) {
            if (o->ns[i] >= 0 && (l->ns[i] = fcntl(o->ns[i], F_DUPFD_CLOEXEC, 3)) < 0) {
                snprintf(err, errlen, "cannot hold the lab's namespaces: %s", strerror(errno));
                return -1;
            }
        }
        s->ns = l->ns;
    }
    return 0;
}

static void launch_free(mkh_launch *l)
{
    mkh_job_drop(&l->job);
    free_vector(l->argv);
    free_vector(l->envp);
    free(l->path);
    free(l->cwd);
    free(l->who);
    free(l->where);
    free(l->ids.groups);
    for (int i = 0; i < 3; i++)
        if (l->ns[i] >= 0) close(l->ns[i]);
    if (l->done_fd >= 0) close(l->done_fd);
    free(l);
}

static void list_add(mkh_launch *l)
{
    l->prev = NULL;
    l->next = unfinished;
    if (unfinished) unfinished->prev = l;
    unfinished = l;
    l->listed = 1;
}

static void list_remove(mkh_launch *l)
{
    if (!l->listed) return;
    if (l->prev) l->prev->next = l->next;
    else unfinished = l->next;
    if (l->next) l->next->prev = l->prev;
    l->prev = l->next = NULL;
    l->listed = 0;
}

mkh_launch *mkh_proc_start_async(const mkh_start_opts *o, int *no_thread, char *err, size_t errlen)
{
    *no_thread = 0;
    if (spawner_start(err, errlen) != 0) {
        *no_thread = 1;
        return NULL;
    }
    mkh_launch *l = calloc(1, sizeof *l);
    if (!l) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    mkh_job_init(&l->job);
    l->ns[0] = l->ns[1] = l->ns[2] = -1;
    l->done_fd = -1;
    l->stop_sig = o->stop_sig;
    l->kill_sig = o->kill_sig;
    l->stop_timeout = o->stop_timeout;
    if (copy_spawn_opts(l, &o->spawn, err, errlen) != 0) {
        launch_free(l);
        return NULL;
    }
    l->done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (l->done_fd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        launch_free(l);
        return NULL;
    }
    if (mkh_start_open(o, &l->spawn, &l->cg_id, err, errlen) != 0 || mkh_job_prepare(&l->job, &l->spawn, err, errlen) != 0) {
        mkh_start_close(&l->spawn, l->cg_id, 1);
        launch_free(l);
        return NULL;
    }
    list_add(l);
    pthread_mutex_lock(&q_lock);
    l->state = L_QUEUED;
    l->qnext = NULL;
    if (q_tail) q_tail->qnext = l;
    else q_head = l;
    q_tail = l;
    pthread_cond_signal(&q_cond);
    pthread_mutex_unlock(&q_lock);
    return l;
}

int mkh_launch_fd(const mkh_launch *l)
{
    return l->done_fd;
}

int mkh_launch_done(mkh_launch *l)
{
    if (l->settled) return 1;
    pthread_mutex_lock(&q_lock);
    int done = l->state == L_DONE || l->state == L_CANCELLED;
    pthread_mutex_unlock(&q_lock);
    return done;
}

/* Until the spawn thread is done with l. With cancel, a launch still in
 * the queue is taken off it instead (and never runs). */
static void launch_wait(mkh_launch *l, int cancel)
{
    pthread_mutex_lock(&q_lock);
    if (cancel && l->state == L_QUEUED) {
        mkh_launch *prev = NULL;
        for (mkh_launch *x = q_head; x && x != l; x = x->qnext) prev = x;
        if (prev) prev->qnext = l->qnext;
        else q_head = l->qnext;
        if (q_tail == l) q_tail = prev;
        l->state = L_CANCELLED;
    }
    while (l->state == L_QUEUED || l->state == L_RUNNING) {
        pthread_mutex_unlock(&q_lock);
        /* bounded by the child's steps before its exec */
        struct pollfd pf = { l->done_fd, POLLIN, 0 };
        poll(&pf, 1, -1);
        pthread_mutex_lock(&q_lock);
    }
    pthread_mutex_unlock(&q_lock);
    list_remove(l);
}

/* The launch's outcome as p (linked when it runs), as mkh_proc_start
 * would have left it. */
static int launch_finish_into(mkh_launch *l, mkh_proc *p, char *err, size_t errlen)
{
    mkh_proc_init(p, l->stop_sig, l->kill_sig, l->stop_timeout);
    int r = -1;
    if (l->state == L_CANCELLED) {
        snprintf(err, errlen, "cancelled before it started");
        mkh_job_drop(&l->job);
    } else {
        pid_t pid;
        int pidfd;
        unsigned long long ticks = 0;
        r = mkh_job_finish(&l->job, &pid, &pidfd, &ticks, err, errlen);
        if (r == 0) mkh_proc_started(p, pid, pidfd, ticks, l->cg_id);
    }
    mkh_start_close(&l->spawn, l->cg_id, r != 0);
    l->cg_id = 0;
    return r;
}

int mkh_launch_finish(mkh_launch *l, mkh_proc *p, char *err, size_t errlen)
{
    int r;
    if (l->settled) {
        /* teardown took its process, as any other of the run's */
        mkh_proc_init(p, l->stop_sig, l->kill_sig, l->stop_timeout);
        snprintf(err, errlen, "cannot start '%s': the run was torn down while it started", l->argv[0]);
        mkh_proc_unlink(&l->p);
        r = -1;
    } else {
        launch_wait(l, 0);
        r = launch_finish_into(l, p, err, errlen);
    }
    launch_free(l);
    return r;
}

void mkh_launch_abandon(mkh_launch *l, const char *token)
{
    if (!l->settled) {
        launch_wait(l, 1);
        char err[1024];
        /* a child nobody will take: killed with what it started, as the
         * collector does with a forgotten process */
        if (launch_finish_into(l, &l->p, err, sizeof err) == 0) {
            mkh_proc_signal(&l->p, SIGKILL);
            mkh_proc_wait(&l->p, mkh_now() + 2.0);
            mkh_proc_sweep(&l->p, token ? token : "");
        }
    }
    mkh_proc_unlink(&l->p);
    launch_free(l);
}

void mkh_launch_settle(void)
{
    while (unfinished) {
        mkh_launch *l = unfinished;
        launch_wait(l, 1);
        char err[1024];
        /* linked: teardown stops and reaps it with the others */
        launch_finish_into(l, &l->p, err, sizeof err);
        l->settled = 1;
    }
}

size_t mkh_launch_children(pid_t *out, size_t cap)
{
    /* while a launch is unfinished its child may be on the list and on no
     * other: not a stray, whatever it looks like */
    if (!spawner_up || unfinished) return 0;
    pthread_mutex_lock(&q_lock);
    pid_t tid = spawner_tid;
    pthread_mutex_unlock(&q_lock);
    return tid ? mkh_task_children(tid, out, cap) : 0;
}
