/* Socket probes and port helpers. */
#define _GNU_SOURCE
#include "mkh.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* ---- name resolution with a deadline ----
 * getaddrinfo has no timeout: a name the DNS never answers holds it for the
 * resolver's own retries (resolv.conf timeout x attempts, 10 s by default,
 * minutes when configured so), and a signal does not end it. So it runs on a
 * detached thread and the caller waits on a condition variable, in slices
 * that let a Ctrl-C through, until its deadline. A lookup outliving its
 * caller finishes on its own and frees itself; while it runs, callers asking
 * for the same name join it rather than piling up threads. */
typedef struct lookup {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs, done, gai, eno;
    struct addrinfo hints, *res;
    const char *serv;           /* into name[] */
    char name[];                /* host, NUL, service, NUL */
} lookup;

#define INFLIGHT_MAX 8
static lookup *inflight[INFLIGHT_MAX]; /* touched by callers only (the Lua thread) */

/* Called with l->mu held; unlocks it, frees l with the last reference. */
static void lookup_unref(lookup *l)
{
    int last = --l->refs == 0;
    pthread_mutex_unlock(&l->mu);
    if (!last) return;
    if (l->res) freeaddrinfo(l->res);
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

static void *lookup_run(void *arg)
{
    lookup *l = arg;
    struct addrinfo *res = NULL;
    int g = getaddrinfo(l->name, l->serv, &l->hints, &res);
    int eno = errno;
    pthread_mutex_lock(&l->mu);
    l->done = 1;
    l->gai = g;
    l->eno = eno;
    l->res = g == 0 ? res : NULL;
    pthread_cond_broadcast(&l->cv);
    lookup_unref(l);
    return NULL;
}

static lookup *lookup_start(const char *host, const char *serv, int passive, char *err, size_t errlen)
{
    size_t hl = strlen(host), sl = strlen(serv);
    lookup *l = calloc(1, sizeof *l + hl + sl + 2);
    if (!l) { snprintf(err, errlen, "cannot resolve '%s': out of memory", host); return NULL; }
    memcpy(l->name, host, hl + 1);
    memcpy(l->name + hl + 1, serv, sl + 1);
    l->serv = l->name + hl + 1;
    l->hints.ai_socktype = SOCK_STREAM;
    l->hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&l->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&l->mu, NULL);
    l->refs = 2; /* the caller's and the thread's */
    pthread_attr_t ta;
    pthread_attr_init(&ta);
    pthread_attr_setdetachstate(&ta, PTHREAD_CREATE_DETACHED);
    /* signals stay with the Lua thread, where they interrupt the wait */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    int rc = pthread_create(&t, &ta, lookup_run, l);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&ta);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve '%s': no thread for the lookup: %s", host, strerror(rc));
        pthread_cond_destroy(&l->cv);
        pthread_mutex_destroy(&l->mu);
        free(l);
        return NULL;
    }
    return l;
}

int mkh_resolve(const char *host, int port, int passive, int prefer_v4, double timeout,
                struct sockaddr_storage *ss, socklen_t *len, char *all, size_t alllen,
                char *err, size_t errlen)
{
    char serv[16];
    uint32_t lab_addr;
    if (!passive && mkh_lab_lookup(host, &lab_addr) == 0) { /* a lab's host: no DNS, no /etc/hosts */
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
        memset(ss, 0, sizeof *ss);
        s4->sin_family = AF_INET;
        s4->sin_port = htons((unsigned short)port);
        s4->sin_addr.s_addr = lab_addr;
        *len = sizeof *s4;
        if (all && alllen) inet_ntop(AF_INET, &s4->sin_addr, all, (socklen_t)alllen);
        return 0;
    }
    snprintf(serv, sizeof serv, "%d", port);
    lookup *l = NULL;
    int slot = -1;
    for (int i = 0; i < INFLIGHT_MAX; i++) {
        lookup *c = inflight[i];
        if (!c) { if (slot < 0) slot = i; continue; }
        pthread_mutex_lock(&c->mu);
        int done = c->done;
        pthread_mutex_unlock(&c->mu);
        if (!done && !l && !strcmp(c->name, host) && !strcmp(c->serv, serv) &&
            !!(c->hints.ai_flags & AI_PASSIVE) == !!passive) {
            l = c;
            continue;
        }
        if (done) { /* finished after its callers gave up: drop the list's reference */
            pthread_mutex_lock(&c->mu);
            lookup_unref(c);
            inflight[i] = NULL;
            if (slot < 0) slot = i;
        }
    }
    if (l) {
        pthread_mutex_lock(&l->mu);
        l->refs++;
        pthread_mutex_unlock(&l->mu);
    } else {
        l = lookup_start(host, serv, passive, err, errlen);
        if (!l) return -1;
        if (slot >= 0) {
            l->refs++;
            inflight[slot] = l;
        }
    }
    double deadline = mkh_now() + (timeout > 0 ? timeout : 0);
    pthread_mutex_lock(&l->mu);
    while (!l->done && !mkh_interrupted()) {
        double now = mkh_now();
        if (now >= deadline) break;
        /* slices of 50 ms: a signal does not wake a condition wait */
        double until = now + 0.05 < deadline ? now + 0.05 : deadline;
        struct timespec ts;
        ts.tv_sec = (time_t)until;
        ts.tv_nsec = (long)((until - (double)ts.tv_sec) * 1e9);
        pthread_cond_timedwait(&l->cv, &l->mu, &ts);
    }
    int r = -1;
    if (!l->done) {
        if (mkh_interrupted()) snprintf(err, errlen, "cannot resolve '%s': interrupted", host);
        else snprintf(err, errlen, "cannot resolve '%s' within %.2f s", host, timeout);
    } else if (l->gai != 0) {
        snprintf(err, errlen, "cannot resolve '%s': %s", host,
                 l->gai == EAI_SYSTEM ? strerror(l->eno) : gai_strerror(l->gai));
    } else {
        struct addrinfo *pick = NULL;
        if (prefer_v4) /* "localhost" may list ::1 first */
            for (struct addrinfo *a = l->res; a; a = a->ai_next)
                if (a->ai_family == AF_INET) { pick = a; break; }
        if (!pick) pick = l->res;
        if (!pick || pick->ai_addrlen > sizeof *ss) {
            snprintf(err, errlen, "cannot resolve '%s': no usable address", host);
        } else {
            memcpy(ss, pick->ai_addr, pick->ai_addrlen);
            *len = pick->ai_addrlen;
            r = 0;
        }
        if (r == 0 && all && alllen) { /* "1.2.3.4,[::1]": what libcurl's CURLOPT_RESOLVE takes */
            size_t used = 0;
            all[0] = '\0';
            for (struct addrinfo *a = l->res; a; a = a->ai_next) {
                char txt[INET6_ADDRSTRLEN];
                const void *src = a->ai_family == AF_INET
                    ? (const void *)&((struct sockaddr_in *)a->ai_addr)->sin_addr
                    : (const void *)&((struct sockaddr_in6 *)a->ai_addr)->sin6_addr;
                if ((a->ai_family != AF_INET && a->ai_family != AF_INET6) ||
                    !inet_ntop(a->ai_family, src, txt, sizeof txt))
                    continue;
                int n = snprintf(all + used, alllen - used, a->ai_family == AF_INET6 ? "%s[%s]" : "%s%s",
                                 used ? "," : "", txt);
                if (n < 0 || (size_t)n >= alllen - used) { all[used] = '\0'; break; }
                used += (size_t)n;
            }
        }
    }
    lookup_unref(l);
    return r;
}

static int connect_bounded(int fd, const struct sockaddr *sa, socklen_t len, double timeout)
{
    if (connect(fd, sa, len) == 0) return 0;
    if (errno != EINPROGRESS) return -1;
    struct pollfd pf = { fd, POLLOUT, 0 };
    int ms = timeout <= 0 ? 0 : (int)(timeout * 1000.0) + 1;
    int r;
    do r = poll(&pf, 1, ms); while (r < 0 && errno == EINTR && !mkh_interrupted());
    if (r == 0) { errno = ETIMEDOUT; return -1; }
    if (r < 0) return -1;
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
    if (soerr) { errno = soerr; return -1; }
    return 0;
}

/* host:port as an address: numeric ones skip the resolver, which matters
 * at 1 kHz polling; names get the resolver within *timeout, reduced by
 * the time it took. */
static int tcp_addr(const char *host, int port, double *timeout, struct sockaddr_storage *ss, socklen_t *len,
                    char *err, size_t errlen)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((unsigned short)port);
        *len = sizeof *s4;
    } else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((unsigned short)port);
        *len = sizeof *s6;
    } else {
        double t0 = mkh_now();
        if (mkh_resolve(host, port, 0, 0, *timeout, ss, len, NULL, 0, err, errlen) != 0) return -1;
        *timeout -= mkh_now() - t0;
        if (*timeout <= 0) *timeout = 0.001;
    }
    return 0;
}

int mkh_tcp_probe(const char *host, int port, double timeout, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (tcp_addr(host, port, &timeout, &ss, &len, err, errlen) != 0) return -1;
    int fd = mkh_socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0, (struct sockaddr *)&ss);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    int r = connect_bounded(fd, (struct sockaddr *)&ss, len, timeout);
    if (r != 0) snprintf(err, errlen, "connect to %s:%d: %s", host, port, strerror(errno));
    close(fd);
    return r;
}

int mkh_tcp_connect_start(const char *host, int port, double resolve_timeout, int *fd, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t len;
    *fd = -1;
    if (tcp_addr(host, port, &resolve_timeout, &ss, &len, err, errlen) != 0) return -1;
    int s = mkh_socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0, (struct sockaddr *)&ss);
    if (s < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    *fd = s; /* connected (0) or connecting (1): the caller's to close */
    if (connect(s, (struct sockaddr *)&ss, len) == 0) return 0;
    if (errno != EINPROGRESS) {
        snprintf(err, errlen, "connect to %s:%d: %s", host, port, strerror(errno));
        close(s);
        *fd = -1;
        return -1;
    }
    return 1;
}

int mkh_tcp_connect_result(int fd, char *err, size_t errlen)
{
    struct pollfd pf = { fd, POLLOUT, 0 };
    if (poll(&pf, 1, 0) <= 0) return 1;
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0) soerr = errno;
    if (soerr) {
        snprintf(err, errlen, "%s", strerror(soerr));
        return -1;
    }
    return 0;
}

int mkh_unix_probe(const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa.sun_path) {
        snprintf(err, errlen, "socket path too long (%zu bytes, at most %zu)", strlen(path),
                 sizeof sa.sun_path - 1);
        return -1;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    /* a unix connect never waits for a handshake: EAGAIN means the backlog is full,
     * which still proves a listener */
    int r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    if (r != 0 && errno == EAGAIN) r = 0;
    if (r != 0) snprintf(err, errlen, "connect to %s: %s", path, strerror(errno));
    close(fd);
    return r;
}

int mkh_free_port(char *err, size_t errlen)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        snprintf(err, errlen, "bind: %s", strerror(errno));
        close(fd);
        return -1;
    }
    close(fd);
    return ntohs(sa.sin_port);
}

/* inode of a listening socket on `port` from /proc/net/tcp{,6}, or 0 */
static unsigned long listen_inode(const char *file, int port)
{
    FILE *f = fopen(file, "re");
    if (!f) return 0;
    char line[512];
    unsigned long found = 0;
    if (!fgets(line, sizeof line, f)) { fclose(f); return 0; }
    while (fgets(line, sizeof line, f)) {
        char local[128];
        unsigned st;
        unsigned long inode;
        if (sscanf(line, "%*d: %127s %*s %x %*s %*s %*s %*d %*d %lu", local, &st, &inode) != 3)
            continue;
        char *colon = strrchr(local, ':');
        if (!colon) continue;
        if ((int)strtol(colon + 1, NULL, 16) == port && st == 0x0A) { found = inode; break; }
    }
    fclose(f);
    return found;
}

pid_t mkh_port_owner(int port, char *cmd, size_t cmdlen)
{
    unsigned long ino = listen_inode("/proc/net/tcp", port);
    if (!ino) ino = listen_inode("/proc/net/tcp6", port);
    if (!ino) return 0;
    char want[64];
    snprintf(want, sizeof want, "socket:[%lu]", ino);
    DIR *d = opendir("/proc");
    if (!d) return 0;
    pid_t owner = 0;
    struct dirent *e;
    while (!owner && (e = readdir(d)) != NULL) {
        if (!isdigit((unsigned char)e->d_name[0])) continue;
        char path[300];
        snprintf(path, sizeof path, "/proc/%s/fd", e->d_name);
        DIR *fds = opendir(path);
        if (!fds) continue;
        struct dirent *f;
        while ((f = readdir(fds)) != NULL) {
            char link[600], target[128];
            snprintf(link, sizeof link, "/proc/%s/fd/%s", e->d_name, f->d_name);
            ssize_t n = readlink(link, target, sizeof target - 1);
            if (n <= 0) continue;
            target[n] = '\0';
            if (!strcmp(target, want)) { owner = (pid_t)atoi(e->d_name); break; }
        }
        closedir(fds);
    }
    closedir(d);
    if (owner) {
        char path[64], buf[4096];
        snprintf(path, sizeof path, "/proc/%d/cmdline", (int)owner);
        ssize_t n = mkh_read_small(path, buf, sizeof buf);
        /* arguments joined by one space; a process title padded with
         * spaces or NULs (redis sets one) is trimmed */
        ssize_t o = 0;
        for (ssize_t i = 0; i < n; i++) {
            char c = buf[i];
            if (c == '\0') c = ' ';
            if (c == ' ' && (o == 0 || buf[o - 1] == ' ')) continue;
            buf[o++] = c;
        }
        while (o > 0 && buf[o - 1] == ' ') o--;
        buf[o > 0 ? o : 0] = '\0';
        snprintf(cmd, cmdlen, "%s", o > 0 ? buf : "?");
    }
    return owner;
}
