/*
 * kvd -- the quickstart demo service: a tiny HTTP key-value store backed by
 * an append-only log.
 *
 *   kvd [--port N] [--bind ADDR] [--data FILE] [--delay SECONDS] [--unsafe-ack] [--fsync]
 *
 *   --bind: the IPv4 address to listen on (127.0.0.1; 0.0.0.0 in a lab host)
 *
 *   GET /health      200 "ok\n"            GET /kv        200 keys, one a line
 *   GET /kv/KEY      200 value | 404       PUT /kv/KEY    204 (body = value)
 *   DELETE /kv/KEY   204
 *
 * Log records, one per line, with \\ \t \n \r and control bytes escaped:
 *   KEY<TAB>VALUE     a put          KEY     a delete (no tab)
 *
 * Single-threaded poll loop, one request per connection (Connection: close).
 *
 * Durability: by default a change is written to the log (one write()) before
 * its 204, so it survives a kill -9 of kvd (the kernel holds the page);
 * --fsync also syncs before answering, for power loss. --unsafe-ack is a
 * deliberate bug for chaos demos: the 204 goes out first and the record
 * waits in memory for up to 200 ms, so a kill -9 loses acknowledged writes.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_KEY 256
#define MAX_VALUE (1 << 20)
#define MAX_HEAD 16384
#define USAGE "usage: kvd [--port N] [--bind ADDR] [--data FILE] [--delay SECONDS] [--unsafe-ack] [--fsync]\n"
#define UNSAFE_DELAY 0.2 /* seconds an unsafe-ack record waits in memory */

struct kv { char *key, *val; size_t vlen; };
static struct kv *kvs;
static size_t nkv, capkv;

enum { C_READ, C_WRITE, C_DRAIN };
struct conn {
    int fd, state;
    char *in, *out;
    size_t inlen, incap, head_len, body_len, outlen, outpos;
    time_t drain_until;
};
static struct conn *conns;
static size_t nconns, capconns;

static int sig_pipe[2] = { -1, -1 }, log_fd = -1, unsafe_ack, do_fsync;

__attribute__((format(printf, 2, 3))) static void say(int fd, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof buf - 1)
        n = (int)sizeof buf - 1;
    for (char *p = buf; n > 0;) { /* unbuffered so it interleaves with the harness */
        ssize_t w = write(fd, p, (size_t)n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        p += w, n -= (int)w;
    }
}

static void *xrealloc(void *p, size_t n)
{
    if (!(p = realloc(p, n ? n : 1))) {
        say(2, "kvd: out of memory\n");
        exit(1);
    }
    return p;
}

static char *pending;            /* --unsafe-ack: records not written yet */
static size_t npending, cappending;
static double pending_since;     /* monotonic seconds of the oldest one */

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(log_fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w, n -= (size_t)w;
    }
    return do_fsync ? fsync(log_fd) : 0;
}

static void flush_pending(void)
{
    if (npending && write_all(pending, npending) < 0)
        say(2, "kvd: log write failed: %s\n", strerror(errno));
    npending = 0;
}

/* The handler only wakes the poll loop; all real work happens there. */
static void on_signal(int sig)
{
    int saved = errno;
    char c = (char)sig;
    (void)!write(sig_pipe[1], &c, 1);
    errno = saved;
}

/* ---- store ---- */

/* Linear search: a demo holds a handful of keys. */
static struct kv *find(const char *key)
{
    for (size_t i = 0; i < nkv; i++)
        if (strcmp(kvs[i].key, key) == 0) return &kvs[i];
    return NULL;
}

static void store_put(const char *key, const char *val, size_t vlen)
{
    struct kv *e = find(key);
    if (!e) {
        if (nkv == capkv)
            kvs = xrealloc(kvs, (capkv = capkv ? capkv * 2 : 16) * sizeof *kvs);
        e = &kvs[nkv++];
        e->key = xrealloc(NULL, strlen(key) + 1);
        strcpy(e->key, key);
        e->val = NULL;
    }
    e->val = xrealloc(e->val, vlen);
    memcpy(e->val, val, vlen);
    e->vlen = vlen;
}

static int store_del(const char *key)
{
    struct kv *e = find(key);
    if (!e) return 0;
    free(e->key);
    free(e->val);
    *e = kvs[--nkv];
    return 1;
}

/* ---- log encoding ---- */

/* Keeps records one per line and readable with cat; UTF-8 passes through. */
static size_t escape(char *dst, const char *src, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        const char *named = c == '\\' ? "\\\\" : c == '\t' ? "\\t" : c == '\n' ? "\\n"
                          : c == '\r' ? "\\r" : NULL;
        if (named) o += (size_t)sprintf(dst + o, "%s", named);
        else if (c < 0x20 || c == 0x7f) o += (size_t)sprintf(dst + o, "\\x%02x", c);
        else dst[o++] = (char)c;
    }
    return o;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* In place; returns the decoded length or -1 on a bad escape. */
static long unescape(char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\') { s[o++] = s[i]; continue; }
        const char *from = "\\tnr", *to = "\\\t\n\r", *k = ++i < n ? strchr(from, s[i]) : NULL;
        if (k && *k) {
            s[o++] = to[k - from];
        } else if (i + 2 < n && s[i] == 'x' && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            s[o++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else return -1;
    }
    return (long)o;
}

/* Writes the whole record with one write() so a crash leaves at most one
 * torn line at the end, which replay then cuts off. */
static int log_append(const char *key, const char *val, size_t vlen, int is_put)
{
    size_t klen = strlen(key);
    char *rec = xrealloc(NULL, 4 * (klen + vlen) + 2);
    size_t n = escape(rec, key, klen);
    if (is_put) {
        rec[n++] = '\t';
        n += escape(rec + n, val, vlen);
    }
    rec[n++] = '\n';
    if (unsafe_ack) { /* the bug on purpose: acknowledged before it is written */
        if (!npending) pending_since = mono();
        if (npending + n > cappending)
            pending = xrealloc(pending, cappending = (npending + n) * 2);
        memcpy(pending + npending, rec, n);
        npending += n;
        free(rec);
        return 0;
    }
    ssize_t w = write(log_fd, rec, n);
    free(rec);
    return w == (ssize_t)n && (!do_fsync || fsync(log_fd) == 0) ? 0 : -1;
}

static long replay(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        say(2, "kvd: %s: %s\n", path, strerror(errno));
        exit(1);
    }
    char *buf = xrealloc(NULL, (size_t)st.st_size + 1);
    size_t len = 0;
    for (ssize_t r = 1; len < (size_t)st.st_size && (r > 0 || (r < 0 && errno == EINTR));)
        if ((r = read(fd, buf + len, (size_t)st.st_size - len)) > 0) len += (size_t)r;
    long records = 0;
    size_t pos = 0;
    while (pos < len) {
        char *line = buf + pos, *nl = memchr(line, '\n', len - pos);
        if (!nl) { /* torn last record from a crash: drop it */
            say(2, "kvd: dropping %zu-byte incomplete record at end of %s\n", len - pos, path);
            if (ftruncate(fd, (off_t)pos) < 0)
                say(2, "kvd: ftruncate: %s\n", strerror(errno));
            break;
        }
        pos = (size_t)(nl - buf) + 1;
        char *tab = memchr(line, '\t', (size_t)(nl - line));
        long klen = unescape(line, (size_t)((tab ? tab : nl) - line));
        long vlen = tab ? unescape(tab + 1, (size_t)(nl - tab - 1)) : 0;
        if (klen <= 0 || vlen < 0 || memchr(line, '\0', (size_t)klen)) {
            say(2, "kvd: skipping malformed record in %s\n", path);
            continue;
        }
        line[klen] = '\0';
        if (tab) store_put(line, tab + 1, (size_t)vlen);
        else store_del(line);
        records++;
    }
    free(buf);
    close(fd);
    return records;
}

/* ---- HTTP ---- */

static const char *reason(int code)
{
    return code == 200 ? "OK" : code == 400 ? "Bad Request" : code == 404 ? "Not Found"
         : code == 405 ? "Method Not Allowed" : code == 413 ? "Payload Too Large"
         : "Internal Server Error";
}

static void respond(struct conn *c, int code, const char *body, size_t blen,
                    const char *method, const char *path)
{
    char head[256];
    int hl = code == 204 /* a 204 must not carry a length or body */
        ? snprintf(head, sizeof head, "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        : snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\n"
                   "Content-Length: %zu\r\nConnection: close\r\n%s\r\n", code, reason(code),
                   blen, code == 405 ? "Allow: GET, PUT, DELETE\r\n" : "");
    if (code == 204) blen = 0;
    c->out = xrealloc(c->out, (size_t)hl + blen);
    memcpy(c->out, head, (size_t)hl);
    if (blen) memcpy(c->out + hl, body, blen);
    c->outlen = (size_t)hl + blen;
    c->outpos = 0;
    c->state = C_WRITE;
    say(2, "kvd: %s %s -> %d\n", method, path, code);
}

#define MSG(c, code, s, m, p) respond(c, code, s, strlen(s), m, p)

static int cmp_key(const void *a, const void *b)
{
    return strcmp(((const struct kv *)a)->key, ((const struct kv *)b)->key);
}

static void handle(struct conn *c, const char *m, const char *path, const char *body)
{
    int get = !strcmp(m, "GET"), put = !strcmp(m, "PUT"), del = !strcmp(m, "DELETE");
    if (!strcmp(path, "/health")) {
        if (get) MSG(c, 200, "ok\n", m, path); else MSG(c, 405, "method not allowed\n", m, path);
    } else if (!strcmp(path, "/kv")) {
        if (!get) { MSG(c, 405, "method not allowed\n", m, path); return; }
        size_t total = 0;
        for (size_t i = 0; i < nkv; i++) total += strlen(kvs[i].key) + 1;
        qsort(kvs, nkv, sizeof *kvs, cmp_key); /* sorted output is easy to test against */
        char *list = xrealloc(NULL, total + 1), *o = list;
        for (size_t i = 0; i < nkv; i++) o += sprintf(o, "%s\n", kvs[i].key);
        respond(c, 200, list, total, m, path);
        free(list);
    } else if (!strncmp(path, "/kv/", 4) && path[4]) {
        const char *key = path + 4;
        struct kv *e = find(key);
        if (strlen(key) > MAX_KEY) MSG(c, 413, "key too long\n", m, path);
        else if (get && e) respond(c, 200, e->val, e->vlen, m, path);
        else if (get) MSG(c, 404, "not found\n", m, path);
        else if (put || del) {
            /* log first, so a 204 always means the change is on disk */
            if (put ? log_append(key, body, c->body_len, 1) : e ? log_append(key, "", 0, 0) : 0)
                MSG(c, 500, "log write failed\n", m, path);
            else {
                if (put) store_put(key, body, c->body_len); else store_del(key);
                respond(c, 204, "", 0, m, path);
            }
        } else MSG(c, 405, "method not allowed\n", m, path);
    } else MSG(c, 404, "not found\n", m, path);
}

/* Called after each read; answers once the whole request is in. */
static void try_request(struct conn *c)
{
    if (!c->head_len) {
        char *end = memmem(c->in, c->inlen, "\r\n\r\n", 4);
        if (!end) {
            if (c->inlen > MAX_HEAD) MSG(c, 400, "head too large\n", "-", "-");
            return;
        }
        c->head_len = (size_t)(end - c->in) + 4;
        for (char *h = strstr(c->in, "\r\n"); h && h < end; h = strstr(h + 2, "\r\n"))
            if (!strncasecmp(h + 2, "Content-Length:", 15))
                c->body_len = strtoul(h + 17, NULL, 10);
    }
    char m[16] = "-", path[MAX_KEY + 64] = "-";
    if (sscanf(c->in, "%15s %319s", m, path) != 2) {
        MSG(c, 400, "bad request\n", m, path);
        return;
    }
    if (c->body_len > MAX_VALUE) {
        MSG(c, 413, "value too large\n", m, path);
        return;
    }
    if (c->inlen - c->head_len < c->body_len)
        return;
    handle(c, m, path, c->in + c->head_len);
}

static void conn_close(size_t i)
{
    close(conns[i].fd);
    free(conns[i].in);
    free(conns[i].out);
    conns[i] = conns[--nconns];
}

/* Returns -1 when the connection is finished. */
static int conn_io(struct conn *c, short rev)
{
    if (c->state == C_WRITE && (rev & (POLLOUT | POLLERR | POLLHUP))) {
        ssize_t w = send(c->fd, c->out + c->outpos, c->outlen - c->outpos, MSG_NOSIGNAL);
        if (w < 0) return errno == EAGAIN || errno == EINTR ? 0 : -1;
        if ((c->outpos += (size_t)w) == c->outlen) {
            /* half-close, then drain: closing with unread input would RST */
            shutdown(c->fd, SHUT_WR);
            c->state = C_DRAIN;
            c->drain_until = time(NULL) + 2;
        }
    } else if (c->state != C_WRITE && (rev & (POLLIN | POLLERR | POLLHUP))) {
        if (c->incap - c->inlen < 65537)
            c->in = xrealloc(c->in, c->incap = c->inlen * 2 + 65537);
        ssize_t r = read(c->fd, c->in + (c->state == C_READ ? c->inlen : 0), 65536);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) return -1;
        if (r > 0 && c->state == C_READ) {
            c->inlen += (size_t)r;
            c->in[c->inlen] = '\0'; /* keeps the string scans in bounds */
            try_request(c);
        }
    }
    return c->state == C_DRAIN && time(NULL) > c->drain_until ? -1 : 0;
}

int main(int argc, char **argv)
{
    long port = 0;
    double delay = 0;
    const char *data = "kvd.log", *bind_addr = "127.0.0.1";
    struct in_addr bind_in;
    for (int i = 1; i < argc; i++) {
        char *end = NULL;
        if (!strcmp(argv[i], "--help")) { say(1, USAGE); return 0; }
        if (!strcmp(argv[i], "--unsafe-ack")) { unsafe_ack = 1; continue; }
        if (!strcmp(argv[i], "--fsync")) { do_fsync = 1; continue; }
        if (i + 1 >= argc) { say(2, USAGE); return 64; }
        if (!strcmp(argv[i], "--port")) port = strtol(argv[++i], &end, 10);
        else if (!strcmp(argv[i], "--delay")) delay = strtod(argv[++i], &end);
        else if (!strcmp(argv[i], "--data")) data = argv[++i];
        else if (!strcmp(argv[i], "--bind")) {
            bind_addr = argv[++i];
            if (inet_pton(AF_INET, bind_addr, &bind_in) != 1) { say(2, "kvd: bad value '%s'\n", bind_addr); return 64; }
        }
        else { say(2, USAGE); return 64; }
        if ((end && (*end || end == argv[i])) || port < 0 || port > 65535 ||
            !(delay >= 0 && delay < 1e6)) {
            say(2, "kvd: bad value '%s'\n", argv[i]);
            return 64;
        }
    }

    if (pipe2(sig_pipe, O_NONBLOCK | O_CLOEXEC) < 0) { perror("kvd: pipe"); return 1; }
    struct sigaction sa = { .sa_handler = on_signal, .sa_flags = SA_RESTART };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    /* The simulated slow start waits on the signal pipe, so it stays stoppable. */
    struct pollfd sp = { .fd = sig_pipe[0], .events = POLLIN };
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double left = delay - ((double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
        if (left <= 0 || poll(&sp, 1, (int)(left * 1000) + 1) > 0)
            break;
    }

    int lfd = -1;
    if (!(sp.revents & POLLIN)) {
        say(1, "kvd: replayed %ld records\n", replay(data));
        if ((log_fd = open(data, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644)) < 0) {
            say(2, "kvd: %s: %s\n", data, strerror(errno));
            return 1;
        }
        struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                    .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        inet_pton(AF_INET, bind_addr, &addr.sin_addr);
        socklen_t alen = sizeof addr;
        int one = 1;
        lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 ||
            listen(lfd, 128) < 0 || getsockname(lfd, (struct sockaddr *)&addr, &alen) < 0) {
            say(2, "kvd: cannot listen on %s:%ld: %s\n", bind_addr, port, strerror(errno));
            return 1;
        }
        say(1, "kvd: listening on %s:%d\n", bind_addr, ntohs(addr.sin_port));
    }

    struct pollfd *pfds = NULL;
    while (lfd >= 0) {
        pfds = xrealloc(pfds, (nconns + 2) * sizeof *pfds);
        pfds[0] = (struct pollfd){ .fd = sig_pipe[0], .events = POLLIN };
        pfds[1] = (struct pollfd){ .fd = lfd, .events = POLLIN };
        for (size_t i = 0; i < nconns; i++)
            pfds[i + 2] = (struct pollfd){ .fd = conns[i].fd,
                                           .events = conns[i].state == C_WRITE ? POLLOUT : POLLIN };
        int ms = nconns ? 1000 : -1;
        if (npending) {
            double left = pending_since + UNSAFE_DELAY - mono();
            int pm = left <= 0 ? 0 : (int)(left * 1000) + 1;
            if (ms < 0 || pm < ms) ms = pm;
        }
        if (poll(pfds, nconns + 2, ms) < 0 && errno != EINTR)
            break;
        if (npending && mono() >= pending_since + UNSAFE_DELAY)
            flush_pending();
        if (pfds[0].revents & POLLIN)
            break;
        for (size_t i = nconns; i-- > 0;) /* backwards: conn_close moves the last one */
            if (conn_io(&conns[i], pfds[i + 2].revents) < 0)
                conn_close(i);
        int fd;
        while ((pfds[1].revents & POLLIN) &&
               (fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
            if (nconns == capconns)
                conns = xrealloc(conns, (capconns = capconns ? capconns * 2 : 16) * sizeof *conns);
            conns[nconns++] = (struct conn){ .fd = fd, .state = C_READ };
        }
    }

    flush_pending(); /* a clean stop keeps even unsafe-ack writes */
    say(1, "kvd: shutting down\n");
    while (nconns) conn_close(nconns - 1);
    for (size_t i = 0; i < nkv; i++) { free(kvs[i].key); free(kvs[i].val); }
    free(kvs);
    free(conns);
    free(pfds);
    free(pending);
    if (log_fd >= 0) close(log_fd);
    if (lfd >= 0) close(lfd);
    return 0;
}
