/* Reading /proc: a process's stat fields and start time, whether its
 * environment carries a run's marker, our own children. Pure readers: no
 * signal is sent from here. */
#define _GNU_SOURCE
#include "mkh.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Fields of /proc/PID/stat after the command: state, ppid, pgrp, session,
 * and (when ticks is not NULL) the start time. */
int mkh_proc_stat(pid_t pid, char *state, pid_t *ppid, pid_t *pgrp, pid_t *sid,
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

unsigned long long mkh_start_ticks(pid_t pid)
{
    char st; pid_t pp, pg, sd;
    unsigned long long t = 0;
    if (mkh_proc_stat(pid, &st, &pp, &pg, &sd, &t) != 0) return 0;
    return t;
}

/* What /proc/PID/environ says of a marker "KEY=VALUE". A nested run's
 * services keep the tokens of the runs around it in MKHARNESS_OUTER
 * ("run/name" words), so an outer run finds them too: a run id matches the
 * words "ID/...", a service token matches itself. */
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

/* MKH_ENV_MATCH: carries the marker; MKH_ENV_OTHER: carries some run's marker but
 * not this one; MKH_ENV_NONE: no marker at all (a scrubbed environment) */
int mkh_env_match(pid_t pid, const char *marker, size_t mlen)
{
    static const char run_key[] = "MKHARNESS_RUN=", outer_key[] = "MKHARNESS_OUTER=";
    const char *eq = memchr(marker, '=', mlen);
    if (!eq) return MKH_ENV_NONE;
    const char *value = eq + 1;
    size_t vlen = mlen - (size_t)(value - marker);
    int is_run = !strncmp(marker, run_key, sizeof run_key - 1);
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/environ", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return MKH_ENV_OTHER; /* gone or unreadable: claim nothing */
    /* environ can be large; scan it in chunks, entries are NUL-separated */
    static char buf[65536];
    size_t have = 0;
    int found = MKH_ENV_NONE;
    for (;;) {
        ssize_t n = read(fd, buf + have, sizeof buf - have);
        if (n <= 0) break;
        have += (size_t)n;
        size_t start = 0;
        for (size_t i = 0; i < have && found != MKH_ENV_MATCH; i++) {
            if (buf[i] != '\0') continue;
            const char *e = buf + start;
            size_t el = i - start;
            if (el == mlen && !memcmp(e, marker, mlen)) found = MKH_ENV_MATCH;
            else if (el >= sizeof outer_key - 1 && !memcmp(e, outer_key, sizeof outer_key - 1)) {
                found = outer_has(e + sizeof outer_key - 1, el - (sizeof outer_key - 1), value, vlen, is_run)
                        ? MKH_ENV_MATCH : MKH_ENV_OTHER;
            } else if (el >= sizeof run_key - 1 && !memcmp(e, run_key, sizeof run_key - 1)) {
                found = MKH_ENV_OTHER;
            }
            start = i + 1;
        }
        if (found == MKH_ENV_MATCH) break;
        if (start == 0 && have == sizeof buf) have = 0; /* absurd entry: skip */
        else { memmove(buf, buf + start, have - start); have -= start; }
    }
    close(fd);
    return found;
}

int mkh_has_marker(pid_t pid, const char *marker, size_t mlen)
{
    return mkh_env_match(pid, marker, mlen) == MKH_ENV_MATCH;
}

unsigned long long mkh_ticks_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    long hz = sysconf(_SC_CLK_TCK);
    return (unsigned long long)ts.tv_sec * (unsigned long long)hz +
           (unsigned long long)ts.tv_nsec / (1000000000ULL / (unsigned long long)hz);
}

size_t mkh_children(pid_t *out, size_t cap)
{
    return mkh_task_children(getpid(), out, cap);
}

size_t mkh_task_children(pid_t tid, pid_t *out, size_t cap)
{
    static char buf[65536]; /* thousands of services: ~8 bytes a pid */
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)tid);
    if (mkh_read_small(path, buf, sizeof buf) <= 0) return 0;
    size_t n = 0;
    for (char *s = buf; *s && n < cap; ) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s) break;
        s = end;
        out[n++] = (pid_t)v;
    }
    return n;
}
