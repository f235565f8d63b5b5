/* Small OS helpers: clock, directories, file tails. */
#define _GNU_SOURCE
#include "mkh.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

double mkh_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Decimal digits of v, to out; their count. */
static size_t put_u64(char *out, unsigned long long v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
    return n;
}

size_t mkh_fixed9(char *out, double t)
{
    /* t - s is exact, and its product by 1e9 within 1.2e-7 of the exact
     * one: only a fraction within 1e-6 of one half could round either
     * way, and that one (as NaN, -0, negatives, huge values) goes to printf */
    if (t >= 0 && !signbit(t) && t < 1e15) {
        unsigned long long s = (unsigned long long)t;
        double y = (t - (double)s) * 1e9;
        unsigned long long ns = (unsigned long long)y;
        double d = y - (double)ns;
        if (d < 0.499999 || d > 0.500001) {
            if (d > 0.5 && ++ns == 1000000000ULL) s++, ns = 0;
            size_t n = put_u64(out, s);
            out[n++] = '.';
            for (int i = 8; i >= 0; i--, ns /= 10) out[n + (size_t)i] = (char)('0' + ns % 10);
            return n + 9;
        }
    }
    int n = snprintf(out, MKH_FIXED9_MAX, "%.9f", t);
    return n < 0 ? 0 : n >= MKH_FIXED9_MAX ? MKH_FIXED9_MAX - 1 : (size_t)n;
}

void mkh_sleep_until(double deadline)
{
    for (;;) {
        double left = deadline - mkh_now();
        if (left <= 0) return;
        struct timespec ts = { (time_t)left, (long)((left - (double)(time_t)left) * 1e9) };
        nanosleep(&ts, NULL);
    }
}

int mkh_mkdir_p(const char *path, char *err, size_t errlen)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) {
        snprintf(err, errlen, "bad directory path '%s'", path);
        return -1;
    }
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1; ; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(buf, 0700) != 0 && errno != EEXIST) {
                snprintf(err, errlen, "cannot create directory '%s': %s", buf, strerror(errno));
                return -1;
            }
            *p = c;
            if (c == '\0') break;
        }
    }
    return 0;
}

static int rmtree_at(int dirfd, const char *name)
{
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return unlinkat(dirfd, name, 0);
    DIR *d = fdopendir(fd);
    if (!d) { close(fd); return -1; }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        /* d_type may be DT_UNKNOWN: a failed unlink of a directory says EISDIR */
        if (e->d_type == DT_DIR || (unlinkat(fd, e->d_name, 0) != 0 && errno == EISDIR))
            rmtree_at(fd, e->d_name);
    }
    closedir(d);
    return unlinkat(dirfd, name, AT_REMOVEDIR);
}

int mkh_rmtree(const char *path)
{
    return rmtree_at(AT_FDCWD, path);
}

char *mkh_tail_file(const char *path, int nlines, size_t maxbytes)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size == 0) { close(fd); return NULL; }
    size_t want = (size_t)st.st_size < maxbytes ? (size_t)st.st_size : maxbytes;
    char *buf = malloc(want + 1);
    if (!buf) { close(fd); return NULL; }
    ssize_t got = pread(fd, buf, want, st.st_size - (off_t)want);
    close(fd);
    if (got <= 0) { free(buf); return NULL; }
    size_t len = (size_t)got;
    if (len && buf[len - 1] == '\n') len--;
    /* walk back nlines newlines */
    size_t start = len;
    int seen = 0;
    while (start > 0) {
        if (buf[start - 1] == '\n' && ++seen == nlines) break;
        start--;
    }
    memmove(buf, buf + start, len - start);
    buf[len - start] = '\0';
    return buf;
}

ssize_t mkh_read_small(const char *path, char *buf, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t off = 0;
    while (off + 1 < len) {
        ssize_t n = read(fd, buf + off, len - 1 - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        off += (size_t)n;
    }
    close(fd);
    buf[off] = '\0';
    return (ssize_t)off;
}

int mkh_grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 0;
    size_t n = *cap ? *cap * 2 : 16;
    while (n < need) n *= 2;
    void *p = realloc(*arr, n * elem);
    if (!p) return -1;
    *arr = p;
    *cap = n;
    return 0;
}

/* The child runs on a stack of its own, allocated once per thread and
 * kept: the calling thread is suspended while it runs, and each thread
 * that starts children (the Lua thread, the spawn thread) has its own, so
 * two children started at once never share one. */
#define CHILD_STACK ((size_t)256 * 1024)

static _Thread_local char *child_stack;

pid_t mkh_vfork_call(int (*fn)(void *), void *arg, int share_memory)
{
    if (!child_stack) {
        void *m = mmap(NULL, CHILD_STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
        if (m == MAP_FAILED) return -1;
        child_stack = m;
    }
    return clone(fn, child_stack + CHILD_STACK, (share_memory ? CLONE_VM : 0) | CLONE_VFORK | SIGCHLD, arg);
}

