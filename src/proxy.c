/* The TCP fault proxy engine (see proxy.h).
 *
 * One thread per running proxy, edge-triggered epoll. A connection is two
 * directions (client -> upstream "up", upstream -> client "down"); each moves
 * its bytes one of two ways:
 *   - no latency, no slicer: splice(2) socket -> pipe -> socket, zero-copy, up to 256 KiB
 *     in flight (the fast path, >= 1 GB/s on loopback);
 *   - latency or slicer (or no pipe could be made): recv() into chunks
 *     stamped with a due time, sent in order once due, at most QUEUE_CAP
 *     queued; the slicer cuts what it sends into pieces with pauses between.
 * At most one of the pipe and the queue holds bytes at any time (reading
 * into one waits until the other is empty), so switching faults never
 * reorders a stream. Bandwidth is a token bucket per direction, taken when
 * reading, so TCP back-pressure reaches the sender. Blackhole stops a
 * direction without closing anything. limit_data is a budget of bytes read
 * from the source; once what was read is delivered, the connection closes.
 *
 * Faults are per direction and per connection: each connection rolls once
 * per fault (its probability) when it opens, and each direction keeps the
 * resulting settings in dir_t.f, so a fault that is off costs a test of a
 * field that is zero.
 *
 * Waiting: EAGAIN means epoll will call again (edge-triggered, so every
 * path either drains to EAGAIN or sets a timer: c->due, or c->again when a
 * busy connection used up its share of one wake-up). */
#define _GNU_SOURCE
#include "proxy.h"
#include "mkh.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define PIPE_CAP (1 << 18)      /* asked for; the kernel may give less */
#define CHUNK_MAX (64 << 10)    /* one recv() on the queued path */
#define QUEUE_CAP (4 << 20)     /* queued bytes per direction */
#define ROUNDS 16               /* read/write rounds per direction per wake */
#define MAX_EVENTS 64

#define DRAIN_ROUNDS 16        /* recv()s discarding input before a clean close */

enum { CMD_NONE, CMD_FAULTS, CMD_DOWN, CMD_UP, CMD_RESET, CMD_STOP };

/* One direction's share of the faults, for this connection. */
typedef struct {
    double latency, jitter, bandwidth, slice_delay;
    size_t slice_size, slice_variation;  /* slice_size 0: no slicer */
    int blackhole;
    int delayed;        /* latency, jitter or slicer: the queued path */
} dir_faults;

typedef struct chunk {
    struct chunk *next;
    double due;
    size_t len, off;
    char data[];
} chunk;

struct conn;

typedef struct {
    struct conn *c;     /* back pointer: epoll hands us a dir_t */
    int up;             /* 1: client -> upstream */
    int src, dst;
    int pipe[2];        /* -1: none, the queued path is used */
    size_t pipe_cap, in_pipe;
    chunk *head, *tail;
    size_t queued;
    double last_due;
    double tokens, refilled;
    int nopipe;         /* pipe2() failed once: do not retry */
    int eof, shut;
    dir_faults f;
    size_t piece_left;  /* slicer: bytes left in the piece being sent */
    double next_piece;  /* slicer: when the next piece may start */
    int limited;        /* limit_data applies: `budget` more bytes may be read */
    unsigned long long budget;
} dir_t;

typedef struct conn {
    struct conn *prev, *next;
    int cfd, ufd;
    int connecting, dead;
    int again;          /* has more to move without a new event */
    unsigned on;        /* bit per fault: this connection drew it */
    double due;         /* next timer, 0: none */
    dir_t d[2];         /* d[0]: up, d[1]: down */
} conn;

struct mkh_proxy {
    /* configuration, set before the thread exists */
    struct sockaddr_storage laddr, uaddr;
    socklen_t llen, ulen;
    int port;
    /* caller's side */
    int running, listening;
    pthread_t th;
    /* the thread's, between start and join */
    int ep, evfd, lfd;
    mkh_proxy_faults cur;
    conn *conns, *graveyard;
    double next_due, accept_resume;
    int any_again;
    uint64_t rng;
    char rbuf[CHUNK_MAX];
    /* shared */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    mkh_proxy_faults faults;   /* under mu */
    int cmd, cmd_arg;          /* under mu */
    double cmd_p;              /* under mu: reset's probability */
    unsigned long seq, done;   /* under mu */
    atomic_ullong n_conns, n_active, n_up, n_down, n_uperr, n_resets, n_limited;
};

/* ------------------------------------------------------------ addresses */

static void set_port(struct sockaddr_storage *ss, int port)
{
    if (ss->ss_family == AF_INET) ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
    else ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
}

static int get_port(const struct sockaddr_storage *ss)
{
    return ntohs(ss->ss_family == AF_INET ? ((const struct sockaddr_in *)ss)->sin_port
                                          : ((const struct sockaddr_in6 *)ss)->sin6_port);
}

/* A listening socket on the proxy's address (port: p->port, else the
 * configured one). Fills p->port. fd or -1 with err. */
static int make_listener(mkh_proxy *p, char *err, size_t errlen)
{
    struct sockaddr_storage ss = p->laddr;
    if (p->port) set_port(&ss, p->port);
    /* a lab's control address: the keeper makes the socket in the lab,
     * where its hosts can connect to it */
    int fd = mkh_socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0, (struct sockaddr *)&ss);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, p->llen) != 0 || listen(fd, SOMAXCONN) != 0) {
        snprintf(err, errlen, "cannot listen on port %d: %s", get_port(&ss), strerror(errno));
        close(fd);
        return -1;
    }
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    p->port = get_port(&ss);
    return fd;
}

/* ------------------------------------------------------------ the thread */

static double rnd(mkh_proxy *p) /* uniform [0, 1), xorshift64* */
{
    p->rng ^= p->rng >> 12;
    p->rng ^= p->rng << 25;
    p->rng ^= p->rng >> 27;
    return (double)((p->rng * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

static double bucket_cap(double rate) { return rate / 50 > 1 ? rate / 50 : 1; }

static void bucket_fill(dir_t *d, double rate, double now)
{
    d->tokens += (now - d->refilled) * rate;
    double cap = bucket_cap(rate);
    if (d->tokens > cap) d->tokens = cap;
    d->refilled = now;
}

static void set_due(conn *c, double t)
{
    if (c->due == 0 || t < c->due) c->due = t;
}

static void count(mkh_proxy *p, dir_t *d, size_t n)
{
    atomic_fetch_add(d->up ? &p->n_up : &p->n_down, n);
}

static void dir_free(dir_t *d)
{
    for (int i = 0; i < 2; i++)
        if (d->pipe[i] >= 0) close(d->pipe[i]);
    d->pipe[0] = d->pipe[1] = -1;
    while (d->head) {
        chunk *k = d->head;
        d->head = k->next;
        free(k);
    }
    d->tail = NULL;
    d->in_pipe = d->queued = 0;
}

static void linger0(int fd)
{
    struct linger l = { 1, 0 };
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
}

/* Close both sockets (rst: abortively) and retire c; freed after the
 * current batch of events, which may still name it. */
static void conn_kill_counted(mkh_proxy *p, conn *c, int rst, atomic_ullong *why)
{
    if (c->dead) return;
    c->dead = 1;
    /* counters first: whoever sees the close sees them */
    atomic_fetch_sub(&p->n_active, 1);
    if (why) atomic_fetch_add(why, 1);
    if (rst) {
        linger0(c->cfd);
        linger0(c->ufd);
    }
    /* explicit removal: a fork in the host's thread may hold the sockets
     * open past our close(), and epoll would go on reporting them */
    epoll_ctl(p->ep, EPOLL_CTL_DEL, c->cfd, NULL);
    epoll_ctl(p->ep, EPOLL_CTL_DEL, c->ufd, NULL);
    close(c->cfd);
    close(c->ufd);
    dir_free(&c->d[0]);
    dir_free(&c->d[1]);
    if (c->prev) c->prev->next = c->next;
    else p->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    c->next = p->graveyard;
    p->graveyard = c;
}

static void conn_kill(mkh_proxy *p, conn *c, int rst) { conn_kill_counted(p, c, rst, NULL); }

static int dir_pipe(dir_t *d);

/* The slicer's next piece size: size +- variation, at least 1. */
static size_t piece_size(mkh_proxy *p, const dir_faults *f)
{
    size_t n = f->slice_size;
    if (f->slice_variation) {
        size_t span = 2 * f->slice_variation + 1;
        size_t r = (size_t)(rnd(p) * (double)span);
        if (r >= span) r = span - 1;
        n = n - f->slice_variation + r;
    }
    return n ? n : 1;
}

/* Move what can move in one direction. 0; -1: the connection failed; 1:
 * limit_data's budget is used up and delivered, close the connection. */
static int dir_pump(mkh_proxy *p, conn *c, dir_t *d, double now)
{
    const dir_faults *f = &d->f;
    if (f->blackhole) return 0;
    for (int round = 0;; round++) {
        while (d->in_pipe) { /* older bytes first: the pipe */
            ssize_t n = splice(d->pipe[0], NULL, d->dst, NULL, d->in_pipe,
                               SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n > 0) {
                d->in_pipe -= (size_t)n;
                count(p, d, (size_t)n);
            } else if (n < 0 && errno == EINTR) {
                continue;
            } else if (n < 0 && errno == EAGAIN) {
                return 0; /* EPOLLOUT on dst */
            } else {
                return -1;
            }
        }
        while (d->head && d->head->due <= now) { /* then due chunks */
            chunk *k = d->head;
            size_t len = k->len - k->off;
            if (f->slice_size) { /* one piece per send(): TCP_NODELAY makes it a segment */
                if (!d->piece_left) {
                    if (now < d->next_piece) break;
                    d->piece_left = piece_size(p, f);
                }
                if (len > d->piece_left) len = d->piece_left;
            }
            ssize_t n = send(d->dst, k->data + k->off, len, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN) return 0;
                return -1;
            }
            k->off += (size_t)n;
            count(p, d, (size_t)n);
            if (f->slice_size) {
                d->piece_left -= (size_t)n;
                if (!d->piece_left) d->next_piece = now + f->slice_delay;
            }
            if (k->off == k->len) {
                d->head = k->next;
                if (!d->head) d->tail = NULL;
                d->queued -= k->len;
                free(k);
            }
        }
        /* next_piece is 0 unless the slicer is pausing */
        if (d->head) set_due(c, d->head->due > d->next_piece ? d->head->due : d->next_piece);
        if (d->eof) {
            if (!d->in_pipe && !d->head && !d->shut) {
                shutdown(d->dst, SHUT_WR);
                d->shut = 1;
            }
            return 0;
        }
        if (round == ROUNDS) { /* let the others have a turn */
            c->again = 1;
            return 0;
        }
        if (d->limited && d->budget == 0) /* close once every allowed byte is out */
            return d->in_pipe || d->head ? 0 : 1;
        int queued = f->delayed || dir_pipe(d) != 0;
        size_t want;
        if (queued) {
            if (d->queued >= QUEUE_CAP) return 0; /* a due chunk's timer comes back */
            want = CHUNK_MAX;
        } else {
            if (d->head) return 0; /* delayed bytes from before clear() go first */
            want = d->pipe_cap;
        }
        if (d->limited && want > d->budget) want = (size_t)d->budget;
        if (f->bandwidth > 0) {
            bucket_fill(d, f->bandwidth, now);
            if (d->tokens < 1) {
                double need = f->bandwidth * 0.005;
                if (need < 1) need = 1;
                if (need > bucket_cap(f->bandwidth)) need = bucket_cap(f->bandwidth);
                set_due(c, now + (need - d->tokens) / f->bandwidth);
                return 0;
            }
            if ((double)want > d->tokens) want = (size_t)d->tokens;
        }
        ssize_t n;
        if (queued) {
            n = recv(d->src, p->rbuf, want, MSG_DONTWAIT);
            if (n > 0) {
                chunk *k = malloc(sizeof *k + (size_t)n);
                if (!k) return -1;
                memcpy(k->data, p->rbuf, (size_t)n);
                k->next = NULL;
                k->len = (size_t)n;
                k->off = 0;
                double delay = f->latency;
                if (f->jitter > 0) delay += (2 * rnd(p) - 1) * f->jitter;
                if (delay < 0) delay = 0;
                k->due = now + delay;
                if (k->due < d->last_due) k->due = d->last_due; /* keep the order */
                d->last_due = k->due;
                if (d->tail) d->tail->next = k;
                else d->head = k;
                d->tail = k;
                d->queued += (size_t)n;
            }
        } else {
            n = splice(d->src, NULL, d->pipe[1], NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n > 0) d->in_pipe += (size_t)n;
        }
        if (n > 0) {
            if (f->bandwidth > 0) d->tokens -= (double)n;
            if (d->limited) d->budget -= (unsigned long long)n;
            continue;
        }
        if (n == 0) {
            d->eof = 1;
            continue;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN) return 0; /* EPOLLIN on src */
        return -1;
    }
}

/* limit_data: a plain close. Unread input would turn close() into an RST
 * (and could cost the peer bytes it has not read yet), so read it away
 * first, a bounded number of times. */
static void limit_close(mkh_proxy *p, conn *c)
{
    int fds[2] = { c->cfd, c->ufd };
    for (int i = 0; i < 2; i++) {
        shutdown(fds[i], SHUT_WR);
        for (int r = 0; r < DRAIN_ROUNDS; r++) {
            ssize_t n = recv(fds[i], p->rbuf, sizeof p->rbuf, MSG_DONTWAIT);
            if (n <= 0 && !(n < 0 && errno == EINTR)) break;
        }
    }
    conn_kill_counted(p, c, 0, &p->n_limited);
}

static void note_timers(mkh_proxy *p, conn *c)
{
    if (c->dead) return;
    if (c->again) p->any_again = 1;
    if (c->due && (p->next_due == 0 || c->due < p->next_due)) p->next_due = c->due;
}

static void pump(mkh_proxy *p, conn *c, double now)
{
    if (c->dead || c->connecting) return;
    c->again = 0;
    c->due = 0;
    for (int k = 0; k < 2; k++) {
        int r = dir_pump(p, c, &c->d[k], now);
        if (r < 0) {
            conn_kill(p, c, 1); /* pass a reset on: RST the other side too */
            return;
        }
        if (r > 0) {
            limit_close(p, c);
            return;
        }
    }
    if (c->d[0].shut && c->d[1].shut) {
        conn_kill(p, c, 0);
        return;
    }
    note_timers(p, c);
}

static void upstream_failed(mkh_proxy *p, conn *c)
{
    conn_kill_counted(p, c, 0, &p->n_uperr);
}

static void dir_init(conn *c, int up)
{
    dir_t *d = &c->d[up ? 0 : 1];
    d->c = c;
    d->up = up;
    d->src = up ? c->cfd : c->ufd;
    d->dst = up ? c->ufd : c->cfd;
    d->pipe[0] = d->pipe[1] = -1;
}

#define BIT(fault) (1u << (fault))
#define ALL_FAULTS (BIT(MKH_F_COUNT) - 1)

/* The faults whose settings differ between a and b. */
static unsigned faults_changed(const mkh_proxy_faults *a, const mkh_proxy_faults *b)
{
    unsigned ch = 0;
    for (int i = 0; i < MKH_F_COUNT; i++)
        if (a->scope[i].dirs != b->scope[i].dirs || a->scope[i].probability != b->scope[i].probability)
            ch |= BIT(i);
    if (a->latency != b->latency || a->jitter != b->jitter) ch |= BIT(MKH_F_LATENCY);
    if (a->bandwidth != b->bandwidth) ch |= BIT(MKH_F_BANDWIDTH);
    if (a->slice_size != b->slice_size || a->slice_variation != b->slice_variation ||
        a->slice_delay != b->slice_delay)
        ch |= BIT(MKH_F_SLICER);
    if (a->limit != b->limit) ch |= BIT(MKH_F_LIMIT);
    return ch;
}

/* Draw, for each fault in `which`, whether it applies to c. */
static void roll(mkh_proxy *p, conn *c, unsigned which)
{
    for (int i = 0; i < MKH_F_COUNT; i++) {
        if (!(which & BIT(i))) continue;
        const mkh_proxy_scope *s = &p->cur.scope[i];
        int on = s->dirs && (s->probability >= 1 || (s->probability > 0 && rnd(p) < s->probability));
        c->on = on ? c->on | BIT(i) : c->on & ~BIT(i);
    }
}

/* Recompute one direction's faults; restart the state of those in `changed`. */
static void dir_apply(mkh_proxy *p, conn *c, dir_t *d, unsigned changed, double now)
{
    const mkh_proxy_faults *f = &p->cur;
    int bit = d->up ? MKH_DIR_UP : MKH_DIR_DOWN;
#define HITS(fault) ((f->scope[fault].dirs & bit) && (c->on & BIT(fault)))
    dir_faults e = { 0 };
    if (HITS(MKH_F_LATENCY)) {
        e.latency = f->latency;
        e.jitter = f->jitter;
    }
    if (HITS(MKH_F_BANDWIDTH)) e.bandwidth = f->bandwidth;
    e.blackhole = HITS(MKH_F_BLACKHOLE);
    if (HITS(MKH_F_SLICER) && f->slice_size) {
        e.slice_size = f->slice_size;
        e.slice_variation = f->slice_variation < f->slice_size ? f->slice_variation : f->slice_size - 1;
        e.slice_delay = f->slice_delay;
    }
    e.delayed = e.latency > 0 || e.jitter > 0 || e.slice_size > 0;
    d->f = e;
    if (changed & BIT(MKH_F_BANDWIDTH)) {
        d->refilled = now;
        d->tokens = e.bandwidth > 0 ? bucket_cap(e.bandwidth) : 0;
    }
    if (changed & BIT(MKH_F_SLICER)) {
        d->piece_left = 0;
        d->next_piece = 0;
    }
    if (changed & BIT(MKH_F_LIMIT)) { /* counted from when the fault is set */
        d->limited = HITS(MKH_F_LIMIT);
        d->budget = f->limit;
    }
#undef HITS
}

static void conn_apply(mkh_proxy *p, conn *c, unsigned changed, double now)
{
    roll(p, c, changed);
    dir_apply(p, c, &c->d[0], changed, now);
    dir_apply(p, c, &c->d[1], changed, now);
}

/* The splice pipe, made when first needed (a blackholed or delayed
 * connection never needs one). 0, or -1: use the queued path. */
static int dir_pipe(dir_t *d)
{
    if (d->pipe[0] >= 0) return 0;
    if (d->nopipe) return -1;
    if (pipe2(d->pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
        d->pipe[0] = d->pipe[1] = -1;
        d->nopipe = 1; /* out of fds: the queued path works without */
        return -1;
    }
    fcntl(d->pipe[1], F_SETPIPE_SZ, PIPE_CAP); /* may be refused: keep the default */
    int sz = fcntl(d->pipe[1], F_GETPIPE_SZ);
    d->pipe_cap = sz > 0 ? (size_t)sz : 65536;
    return 0;
}

static void conn_new(mkh_proxy *p, int cfd, double now)
{
    atomic_fetch_add(&p->n_conns, 1);
    conn *c = calloc(1, sizeof *c);
    int ufd = c ? mkh_socket(p->uaddr.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0, (struct sockaddr *)&p->uaddr) : -1;
    if (ufd < 0) {
        atomic_fetch_add(&p->n_uperr, 1);
        free(c);
        close(cfd);
        return;
    }
    int one = 1;
    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(ufd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->cfd = cfd;
    c->ufd = ufd;
    dir_init(c, 1);
    dir_init(c, 0);
    conn_apply(p, c, ALL_FAULTS, now);
    c->next = p->conns;
    if (p->conns) p->conns->prev = c;
    p->conns = c;
    atomic_fetch_add(&p->n_active, 1);
    int r = connect(ufd, (struct sockaddr *)&p->uaddr, p->ulen);
    if (r != 0 && errno != EINPROGRESS) {
        upstream_failed(p, c);
        return;
    }
    if (r != 0) { /* on loopback the handshake is often done already: skip a wake-up */
        struct pollfd pf = { ufd, POLLOUT, 0 };
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (poll(&pf, 1, 0) == 1 && getsockopt(ufd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0)
            r = 0;
    }
    c->connecting = r != 0;
    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET };
    ev.data.ptr = &c->d[0];
    epoll_ctl(p->ep, EPOLL_CTL_ADD, cfd, &ev);
    ev.data.ptr = &c->d[1];
    epoll_ctl(p->ep, EPOLL_CTL_ADD, ufd, &ev);
    pump(p, c, now);
}

static void conn_event(mkh_proxy *p, dir_t *d, uint32_t events, double now)
{
    conn *c = d->c;
    if (c->dead) return;
    if (c->connecting) {
        if (d->up) return; /* the client: read once the upstream answers */
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        getsockopt(c->ufd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        if (soerr || (events & (EPOLLERR | EPOLLHUP))) {
            upstream_failed(p, c);
            return;
        }
        if (!(events & EPOLLOUT)) return;
        c->connecting = 0;
    } else if ((c->d[0].f.blackhole || c->d[1].f.blackhole) && (events & (EPOLLERR | EPOLLHUP))) {
        conn_kill(p, c, 1); /* one side is gone: nothing could ever pass */
        return;
    }
    pump(p, c, now);
}

static void accept_all(mkh_proxy *p, double now)
{
    for (int i = 0; i < MAX_EVENTS && p->lfd >= 0; i++) {
        int fd = accept4(p->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            conn_new(p, fd, now);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            /* level-triggered: stop listening for a moment, or we would spin */
            struct epoll_event ev = { .events = 0 };
            ev.data.ptr = &p->lfd;
            epoll_ctl(p->ep, EPOLL_CTL_MOD, p->lfd, &ev);
            p->accept_resume = now + 0.05;
            if (p->next_due == 0 || p->accept_resume < p->next_due) p->next_due = p->accept_resume;
        }
        break;
    }
}

static void listen_on(mkh_proxy *p, int fd)
{
    p->lfd = fd;
    p->accept_resume = 0;
    struct epoll_event ev = { .events = EPOLLIN };
    ev.data.ptr = &p->lfd;
    epoll_ctl(p->ep, EPOLL_CTL_ADD, fd, &ev);
}

static void close_listener(mkh_proxy *p)
{
    if (p->lfd < 0) return;
    epoll_ctl(p->ep, EPOLL_CTL_DEL, p->lfd, NULL);
    close(p->lfd);
    p->lfd = -1;
}

static void kill_all(mkh_proxy *p)
{
    while (p->conns) conn_kill(p, p->conns, 0);
}

static void pump_all(mkh_proxy *p, double now)
{
    conn *next;
    p->any_again = 0;
    p->next_due = p->accept_resume;
    for (conn *c = p->conns; c; c = next) {
        next = c->next; /* pump may retire c */
        pump(p, c, now);
    }
}

/* A command from the caller. Returns 1 for stop. */
static int control(mkh_proxy *p, double now)
{
    uint64_t v;
    while (read(p->evfd, &v, sizeof v) < 0 && errno == EINTR) {}
    pthread_mutex_lock(&p->mu);
    int cmd = p->cmd, arg = p->cmd_arg;
    double prob = p->cmd_p;
    mkh_proxy_faults f = p->faults;
    pthread_mutex_unlock(&p->mu);
    int stop = 0;
    switch (cmd) {
    case CMD_FAULTS: {
        unsigned changed = faults_changed(&p->cur, &f);
        p->cur = f;
        for (conn *c = p->conns; c; c = c->next) conn_apply(p, c, changed, now);
        pump_all(p, now); /* e.g. out of a blackhole: no event would come */
        break;
    }
    case CMD_DOWN:
        close_listener(p);
        kill_all(p);
        break;
    case CMD_UP:
        listen_on(p, arg);
        break;
    case CMD_RESET: {
        conn *next;
        for (conn *c = p->conns; c; c = next) {
            next = c->next;
            if (prob >= 1 || (prob > 0 && rnd(p) < prob)) conn_kill_counted(p, c, 1, &p->n_resets);
        }
        break;
    }
    case CMD_STOP:
        kill_all(p);
        close_listener(p);
        stop = 1;
        break;
    default:
        break;
    }
    pthread_mutex_lock(&p->mu);
    if (cmd != CMD_NONE) {
        p->cmd = CMD_NONE;
        p->done = p->seq;
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return stop;
}

static void bury(mkh_proxy *p)
{
    while (p->graveyard) {
        conn *c = p->graveyard;
        p->graveyard = c->next;
        free(c);
    }
}

static void *proxy_main(void *arg)
{
    mkh_proxy *p = arg;
    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int timeout = -1;
        if (p->any_again) {
            timeout = 0;
        } else if (p->next_due > 0) {
            double w = p->next_due - mkh_now();
            timeout = w <= 0 ? 0 : w > 3600 ? 3600000 : (int)(w * 1000.0) + 1;
        }
        int n = epoll_wait(p->ep, evs, MAX_EVENTS, timeout);
        double now = mkh_now();
        int stop = 0;
        for (int i = 0; i < n; i++) {
            void *tag = evs[i].data.ptr;
            if (tag == &p->evfd) stop |= control(p, now);
            else if (tag == &p->lfd) accept_all(p, now);
            else conn_event(p, tag, evs[i].events, now);
        }
        if (stop) break;
        if (p->any_again || (p->next_due > 0 && now >= p->next_due)) {
            if (p->accept_resume > 0 && now >= p->accept_resume && p->lfd >= 0) {
                struct epoll_event ev = { .events = EPOLLIN };
                ev.data.ptr = &p->lfd;
                epoll_ctl(p->ep, EPOLL_CTL_MOD, p->lfd, &ev);
                p->accept_resume = 0;
            }
            /* pump those whose timer is due or that had more to do */
            conn *next;
            p->any_again = 0;
            p->next_due = p->accept_resume;
            for (conn *c = p->conns; c; c = next) {
                next = c->next;
                if (c->again || (c->due && c->due <= now)) pump(p, c, now);
                else note_timers(p, c);
            }
        }
        bury(p);
    }
    bury(p);
    return NULL;
}

/* ------------------------------------------------------------ the caller's side */

/* Hand a command to the thread and wait until it is done. */
static void command_p(mkh_proxy *p, int cmd, int arg, double prob);
static void command(mkh_proxy *p, int cmd, int arg) { command_p(p, cmd, arg, 1); }

static void command_p(mkh_proxy *p, int cmd, int arg, double prob)
{
    pthread_mutex_lock(&p->mu);
    while (p->cmd != CMD_NONE) pthread_cond_wait(&p->cv, &p->mu);
    p->cmd = cmd;
    p->cmd_arg = arg;
    p->cmd_p = prob;
    unsigned long mine = ++p->seq;
    uint64_t one = 1;
    while (write(p->evfd, &one, sizeof one) < 0 && errno == EINTR) {}
    while (p->done < mine) pthread_cond_wait(&p->cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

mkh_proxy *mkh_proxy_new(const char *listen_host, int listen_port,
                         const char *up_host, int up_port, double timeout,
                         char *err, size_t errlen)
{
    mkh_proxy *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    /* IPv4 first: "localhost" may list ::1 first */
    if (mkh_resolve(listen_host, listen_port, 1, 1, timeout, &p->laddr, &p->llen, NULL, 0, err, errlen) != 0 ||
        mkh_resolve(up_host, up_port, 0, 1, timeout, &p->uaddr, &p->ulen, NULL, 0, err, errlen) != 0) {
        free(p);
        return NULL;
    }
    p->ep = p->evfd = p->lfd = -1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    return p;
}

int mkh_proxy_start(mkh_proxy *p, char *err, size_t errlen)
{
    if (p->running) return 0;
    int lfd = make_listener(p, err, errlen);
    if (lfd < 0) return -1;
    p->ep = epoll_create1(EPOLL_CLOEXEC);
    p->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (p->ep < 0 || p->evfd < 0) {
        snprintf(err, errlen, "epoll/eventfd: %s", strerror(errno));
        goto fail;
    }
    struct epoll_event ev = { .events = EPOLLIN };
    ev.data.ptr = &p->evfd;
    epoll_ctl(p->ep, EPOLL_CTL_ADD, p->evfd, &ev);
    listen_on(p, lfd);
    pthread_mutex_lock(&p->mu);
    p->cur = p->faults;
    pthread_mutex_unlock(&p->mu);
    p->conns = p->graveyard = NULL;
    p->next_due = 0;
    p->any_again = 0;
    p->rng = (uint64_t)(mkh_now() * 1e9) ^ (uint64_t)(uintptr_t)p ^ 0x9e3779b97f4a7c15ULL;
    if (!p->rng) p->rng = 1;
    /* all signals blocked in the thread: the host's handlers stay on the
     * main thread, and a SIGPIPE from splice() into a closed peer is moot */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int r = pthread_create(&p->th, NULL, proxy_main, p);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r != 0) {
        snprintf(err, errlen, "pthread_create: %s", strerror(r));
        goto fail;
    }
    p->running = 1;
    p->listening = 1;
    return 0;
fail:
    close(lfd);
    p->lfd = -1;
    if (p->ep >= 0) close(p->ep);
    if (p->evfd >= 0) close(p->evfd);
    p->ep = p->evfd = -1;
    return -1;
}

int mkh_proxy_port(const mkh_proxy *p) { return p->port; }
int mkh_proxy_running(const mkh_proxy *p) { return p->running; }
int mkh_proxy_listening(const mkh_proxy *p) { return p->running && p->listening; }

void mkh_proxy_stop(mkh_proxy *p)
{
    if (!p->running) return;
    command(p, CMD_STOP, 0);
    pthread_join(p->th, NULL);
    close(p->ep);
    close(p->evfd);
    p->ep = p->evfd = -1;
    p->running = p->listening = 0;
}

void mkh_proxy_free(mkh_proxy *p)
{
    if (!p) return;
    mkh_proxy_stop(p);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

void mkh_proxy_set_faults(mkh_proxy *p, const mkh_proxy_faults *f)
{
    pthread_mutex_lock(&p->mu);
    p->faults = *f;
    pthread_mutex_unlock(&p->mu);
    if (p->running) command(p, CMD_FAULTS, 0);
}

void mkh_proxy_down(mkh_proxy *p)
{
    if (!p->running) return;
    command(p, CMD_DOWN, 0);
    p->listening = 0;
}

int mkh_proxy_up(mkh_proxy *p, char *err, size_t errlen)
{
    if (!p->running || p->listening) return 0;
    int fd = make_listener(p, err, errlen);
    if (fd < 0) return -1;
    command(p, CMD_UP, fd);
    p->listening = 1;
    return 0;
}

void mkh_proxy_reset(mkh_proxy *p, double probability)
{
    if (p->running) command_p(p, CMD_RESET, 0, probability);
}

void mkh_proxy_get_stats(mkh_proxy *p, mkh_proxy_stats *s)
{
    s->connections = atomic_load(&p->n_conns);
    s->active = atomic_load(&p->n_active);
    s->bytes_up = atomic_load(&p->n_up);
    s->bytes_down = atomic_load(&p->n_down);
    s->upstream_errors = atomic_load(&p->n_uperr);
    s->resets = atomic_load(&p->n_resets);
    s->limited = atomic_load(&p->n_limited);
}
