/* Live echo: one thread copies new complete lines of the capture files of
 * echoing services to fd 2 as they are written, prefixed "[name] " (stderr
 * lines "[name!] "), optionally coloured and time-stamped. A thread, not the
 * wait loop, so that lines come while the scenario sleeps, waits on HTTP,
 * runs os.execute or loops in Lua.
 *
 * The thread has its own inotify instance: the run's shared one only wakes
 * the wait loop, and a second reader draining it could swallow a wake-up.
 * Lines go out in the order the thread sees them (inotify's queue order),
 * each with one write(), so they never interleave mid-line with each other
 * or with the harness's own one-write event lines.
 *
 * Streams live in memory the caller owns (a Lua userdata); every access,
 * from the thread or the caller, holds `mu`, so a flush or close by the
 * caller is synchronous: when it returns, the lines are out. */
#define _GNU_SOURCE
#include "mkh.h"

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
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#define ECHO_LINE_MAX (64 << 10) /* longer lines are cut, memory stays bounded */
#define ECHO_PASS (256 << 10)    /* bytes per stream per pass: floods take turns */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static mkh_echo *streams;            /* open streams, a doubly linked list */
static int ino = -1, wake = -1;      /* permanent once made (fd leak checks) */
static pthread_t thread;
static int running, stopping;
static int opt_color, opt_stamps;
static double opt_t0;
static char out[ECHO_LINE_MAX + 1024]; /* one output line; used under mu */

/* Readable on both dark and light terminals; red is kept for the stderr mark. */
static const char *const palette[] = { "32", "33", "34", "35", "36", "92", "94", "95", "96" };

void mkh_echo_setup(int color, int stamps, double t0)
{
    pthread_mutex_lock(&mu);
    opt_color = color;
    opt_stamps = stamps;
    opt_t0 = t0;
    pthread_mutex_unlock(&mu);
}

static const char *echo_color(const char *name)
{
    uint32_t h = 2166136261u; /* FNV-1a: stable across runs and machines */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) h = (h ^ *p) * 16777619u;
    return palette[h % (sizeof palette / sizeof palette[0])];
}

static int echo_stamp(char *buf, size_t len, int color)
{
    double t = mkh_now() - opt_t0;
    if (t < 0) t = 0;
    return snprintf(buf, len, color ? "\033[2m+%.3fs\033[0m " : "+%.3fs ", t);
}

static void write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(2, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return; /* stderr gone: nothing else to tell */
        p += w;
        n -= (size_t)w;
    }
}

static void emit(mkh_echo *e, int cut)
{
    size_t len = e->len;
    if (len && e->buf[len - 1] == '\r') len--;
    size_t n = 0;
    if (opt_stamps) n += (size_t)echo_stamp(out, sizeof out, opt_color);
    if (opt_color) {
        const char *c = echo_color(e->name);
        n += (size_t)snprintf(out + n, sizeof out - n, e->is_err ? "\033[%sm[%s\033[1;31m!\033[0;%sm]\033[0m "
                              : "\033[%sm[%s]\033[0m ", c, e->name, c);
    } else {
        n += (size_t)snprintf(out + n, sizeof out - n, "[%s%s] ", e->name, e->is_err ? "!" : "");
    }
    if (n > sizeof out - ECHO_LINE_MAX - 64) n = sizeof out - ECHO_LINE_MAX - 64;
    memcpy(out + n, e->buf, len);
    n += len;
    if (cut) n += (size_t)snprintf(out + n, sizeof out - n, " [... cut at %d bytes]", ECHO_LINE_MAX);
    out[n++] = '\n';
    write_all(out, n);
}

/* Split new bytes into lines; the incomplete last one stays in e->buf. */
static void feed(mkh_echo *e, const char *p, size_t n)
{
    while (n > 0) {
        const char *nl = memchr(p, '\n', n);
        size_t seg = nl ? (size_t)(nl - p) : n;
        if (!e->cut) {
            size_t room = ECHO_LINE_MAX - e->len;
            size_t take = seg < room ? seg : room;
            memcpy(e->buf + e->len, p, take);
            e->len += take;
            if (take < seg) { /* too long: out it goes, the rest is dropped */
                emit(e, 1);
                e->len = 0;
                e->cut = 1;
            }
        }
        if (!nl) return;
        if (!e->cut) emit(e, 0);
        e->len = 0;
        e->cut = 0;
        p = nl + 1;
        n -= seg + 1;
    }
}

/* Read up to `end` (at most ECHO_PASS bytes); 1 when more is waiting. */
static int drain(mkh_echo *e, off_t end)
{
    static char chunk[64 << 10];
    if (end > e->off + ECHO_PASS) end = e->off + ECHO_PASS;
    while (e->off < end) {
        size_t want = (size_t)(end - e->off) < sizeof chunk ? (size_t)(end - e->off) : sizeof chunk;
        ssize_t r = pread(e->fd, chunk, want, e->off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return 0;
        e->off += r;
        feed(e, chunk, (size_t)r);
    }
    struct stat st;
    return fstat(e->fd, &st) == 0 && st.st_size > e->off;
}

/* Read the inotify queue; streams with news get the rank of their first
 * event (streams left over from a pass rank first: theirs is older). */
static int read_events(int *seq)
{
    static char ev[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    int got = 0;
    for (;;) {
        ssize_t n = read(ino, ev, sizeof ev);
        if (n <= 0) return got;
        for (char *p = ev; p < ev + n; ) {
            struct inotify_event *ie = (struct inotify_event *)p;
            for (mkh_echo *e = streams; e; e = e->next)
                if ((e->wd == ie->wd || (ie->mask & IN_Q_OVERFLOW)) && !e->rank) e->rank = ++*seq;
            got = 1;
            p += sizeof *ie + ie->len;
        }
    }
}

/* Under mu: one pass over what was written, in the order inotify saw the
 * streams change. The sizes are a consistent snapshot (no write came while
 * taking them: the queue stayed empty), so a line is never put out before
 * one written earlier to a stream that ranks before it. 1 when a stream
 * has more than a pass takes. */
static int pass(void)
{
    int seq = 0;
    for (mkh_echo *e = streams; e; e = e->next) e->rank = e->more ? ++seq : 0;
    read_events(&seq);
    for (int tries = 0; tries < 8; tries++) {
        for (mkh_echo *e = streams; e; e = e->next) {
            struct stat st;
            e->snap = fstat(e->fd, &st) == 0 ? st.st_size : e->off;
            if (e->snap > e->off && !e->rank) e->rank = ++seq; /* a missed event */
        }
        if (!read_events(&seq)) break;
    }
    int more = 0;
    for (int r = 1; r <= seq; r++)
        for (mkh_echo *e = streams; e; e = e->next)
            if (e->rank == r) more |= e->more = drain(e, e->snap);
    return more;
}

static void *echo_main(void *arg)
{
    (void)arg;
    int more = 0;
    for (;;) {
        struct pollfd pf[2] = { { ino, POLLIN, 0 }, { wake, POLLIN, 0 } };
        poll(pf, 2, more ? 0 : -1);
        if (pf[1].revents) {
            uint64_t v;
            (void)!read(wake, &v, sizeof v);
        }
        pthread_mutex_lock(&mu);
        if (stopping) {
            pthread_mutex_unlock(&mu);
            return NULL;
        }
        more = pass(); /* floods take turns, a pass each */
        pthread_mutex_unlock(&mu);
    }
}

/* Under mu: every stream up to its size now, in order. */
static void catch_up(void)
{
    for (mkh_echo *e = streams; e; e = e->next) {
        struct stat st;
        e->target = fstat(e->fd, &st) == 0 ? st.st_size : e->off;
    }
    for (int left = 1; left; ) {
        pass();
        left = 0;
        for (mkh_echo *e = streams; e; e = e->next) left |= e->off < e->target && e->more;
    }
}

/* Under mu. The fds are made on first use and kept for the process's life. */
static int start_thread(char *err, size_t errlen)
{
    if (ino < 0) ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (wake < 0) wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (ino < 0 || wake < 0) {
        snprintf(err, errlen, "echo: %s: %s", ino < 0 ? "inotify_init1" : "eventfd", strerror(errno));
        return -1;
    }
    if (running) return 0;
    /* signals are for the main thread: its waits must be the ones cut short */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int r = pthread_create(&thread, NULL, echo_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r != 0) {
        snprintf(err, errlen, "echo: cannot start its thread: %s", strerror(r));
        return -1;
    }
    pthread_setname_np(thread, "mkh-echo"); /* to tell it in ps and /proc */
    running = 1;
    return 0;
}

int mkh_echo_open(mkh_echo *e, const char *path, const char *name, int is_err, char *err, size_t errlen)
{
    memset(e, 0, sizeof *e);
    e->fd = e->wd = -1;
    snprintf(e->name, sizeof e->name, "%s", name);
    e->is_err = is_err;
    pthread_mutex_lock(&mu);
    int r = -1;
    if (start_thread(err, errlen) != 0) goto out;
    e->buf = malloc(ECHO_LINE_MAX);
    if (!e->buf) { snprintf(err, errlen, "echo: out of memory"); goto out; }
    /* the watch before the first read: nothing written in between is missed */
    e->wd = inotify_add_watch(ino, path, IN_MODIFY);
    if (e->wd < 0) { snprintf(err, errlen, "echo: cannot watch %s: %s", path, strerror(errno)); goto out; }
    e->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (e->fd < 0) { snprintf(err, errlen, "echo: cannot open %s: %s", path, strerror(errno)); goto out; }
    e->open = 1;
    /* at the tail: streams that tie in a pass go in the order they came */
    mkh_echo **tail = &streams;
    while (*tail) { e->prev = *tail; tail = &(*tail)->next; }
    *tail = e;
    struct stat st;
    if (fstat(e->fd, &st) == 0 && st.st_size > 0) {
        e->more = 1; /* what the file holds already: the thread's next pass */
        uint64_t one = 1;
        (void)!write(wake, &one, sizeof one);
    }
    r = 0;
out:
    if (r != 0) {
        int shared = 0;
        for (mkh_echo *o = streams; o; o = o->next) shared |= o->wd == e->wd;
        if (e->wd >= 0 && !shared) inotify_rm_watch(ino, e->wd);
        if (e->fd >= 0) close(e->fd);
        free(e->buf);
        e->buf = NULL;
        e->fd = -1;
    }
    pthread_mutex_unlock(&mu);
    return r;
}

/* Every stream, not only e: lines of others written before e's come first. */
void mkh_echo_flush(mkh_echo *e)
{
    (void)e;
    mkh_echo_flush_all();
}

/* Under mu: all of it, the unterminated last line too (nothing follows). */
static void close_locked(mkh_echo *e)
{
    if (!e->open) return;
    catch_up();
    while (drain(e, e->off + ECHO_PASS)) {}
    if (e->len && !e->cut) emit(e, 0);
    e->open = 0;
    if (e->prev) e->prev->next = e->next;
    else streams = e->next;
    if (e->next) e->next->prev = e->prev;
    e->prev = e->next = NULL;
    /* a restarted service watches the same file (same descriptor) */
    int shared = 0;
    for (mkh_echo *o = streams; o; o = o->next) shared |= o->wd == e->wd;
    if (!shared) inotify_rm_watch(ino, e->wd);
    close(e->fd);
    e->fd = -1;
    free(e->buf);
    e->buf = NULL;
}

void mkh_echo_close(mkh_echo *e)
{
    pthread_mutex_lock(&mu);
    close_locked(e);
    pthread_mutex_unlock(&mu);
}

void mkh_echo_flush_all(void)
{
    pthread_mutex_lock(&mu);
    catch_up();
    pthread_mutex_unlock(&mu);
}

void mkh_echo_shutdown(void)
{
    pthread_mutex_lock(&mu);
    while (streams) close_locked(streams);
    int join = running;
    if (join) {
        stopping = 1;
        uint64_t one = 1;
        (void)!write(wake, &one, sizeof one);
    }
    pthread_mutex_unlock(&mu);
    if (!join) return;
    pthread_join(thread, NULL);
    pthread_mutex_lock(&mu);
    running = stopping = 0;
    pthread_mutex_unlock(&mu);
}
