/* The TCP fault proxy engine (proxy.c): no Lua. Each running proxy owns one
 * forwarding thread (epoll) that never touches Lua, so forwarding goes on
 * whatever the scenario does (long Lua loops, os.execute, sleeping). The
 * caller's thread talks to it through a mutex-protected settings block and an
 * eventfd; every control call below returns once the thread has applied it. */
#ifndef MKH_PROXY_H
#define MKH_PROXY_H

#include <stddef.h>

typedef struct mkh_proxy mkh_proxy;

/* Each fault applies to the directions in `dirs` (bit 0: up, client ->
 * upstream; bit 1: down, upstream -> client; 0: the fault is off) of a share
 * `probability` of the connections, rolled once per connection when it opens
 * (and, for connections already open, when that fault is set). */
enum { MKH_F_LATENCY, MKH_F_BANDWIDTH, MKH_F_BLACKHOLE, MKH_F_SLICER, MKH_F_LIMIT, MKH_F_COUNT };
#define MKH_DIR_UP 1
#define MKH_DIR_DOWN 2

typedef struct {
    int dirs;
    double probability;         /* 0..1 */
} mkh_proxy_scope;

typedef struct {
    mkh_proxy_scope scope[MKH_F_COUNT];
    double latency;             /* seconds added to each chunk */
    double jitter;              /* +- seconds, uniform; order is preserved */
    double bandwidth;           /* bytes per second per direction of a connection */
    /* blackhole: accept, pass nothing (parameters: none) */
    size_t slice_size;          /* slicer: pieces of about this many bytes (>= 1) */
    size_t slice_variation;     /* +- bytes, uniform (< slice_size) */
    double slice_delay;         /* seconds between pieces */
    unsigned long long limit;   /* limit_data: close after this many bytes */
} mkh_proxy_faults;

typedef struct {
    unsigned long long connections;     /* accepted, in total */
    unsigned long long active;          /* open now */
    unsigned long long bytes_up;        /* client -> upstream, delivered */
    unsigned long long bytes_down;      /* upstream -> client, delivered */
    unsigned long long upstream_errors; /* connects to upstream that failed */
    unsigned long long resets;          /* connections reset by reset() */
    unsigned long long limited;         /* connections closed by limit_data */
} mkh_proxy_stats;

/* Resolve both ends (numeric or by name; IPv4 preferred), each within
 * `timeout` seconds. Nothing is bound yet. NULL with a message in err. */
mkh_proxy *mkh_proxy_new(const char *listen_host, int listen_port,
                         const char *up_host, int up_port, double timeout,
                         char *err, size_t errlen);
/* Bind, listen and start the thread (no-op when running). A restarted proxy
 * listens on the port it had. 0, or -1 with err. */
int mkh_proxy_start(mkh_proxy *p, char *err, size_t errlen);
int mkh_proxy_port(const mkh_proxy *p);    /* 0 until the first start */
int mkh_proxy_running(const mkh_proxy *p);
int mkh_proxy_listening(const mkh_proxy *p);
/* Stop the thread, close every socket, join. No-op when stopped. */
void mkh_proxy_stop(mkh_proxy *p);
void mkh_proxy_free(mkh_proxy *p);

/* Replace the faults (kept across restarts; applies at once when running). */
void mkh_proxy_set_faults(mkh_proxy *p, const mkh_proxy_faults *f);
/* Close the listening socket (connects are refused) and every connection. */
void mkh_proxy_down(mkh_proxy *p);
/* Listen again on the same port. 0, or -1 with err (someone took it). */
int mkh_proxy_up(mkh_proxy *p, char *err, size_t errlen);
/* RST each open connection with the given probability (1: every one;
 * SO_LINGER {1, 0}, then close). */
void mkh_proxy_reset(mkh_proxy *p, double probability);
void mkh_proxy_get_stats(mkh_proxy *p, mkh_proxy_stats *s);

#endif
