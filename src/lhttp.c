/* HTTP through libcurl: core.http_request{...}, the blocking client of
 * mk.http_request, mk.get and the HTTP probe's precheck; and
 * core.http_start{...}, one non-blocking request driven by the wait loop
 * (the HTTP readiness probe), so a slow endpoint holds no other waiter.
 *
 * libcurl is loaded on first use with dlopen: linked in, its ~34 shared
 * libraries cost every run 6 ms of start-up and 8 MB of RSS, even the many
 * scenarios that never speak HTTP (measured by bench/run.lua). */
#define _GNU_SOURCE
#include "lmkh.h"
#include "mkh.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <lauxlib.h>

static struct {
    CURL *(*easy_init)(void);
    CURLcode (*easy_setopt)(CURL *, CURLoption, ...);
    CURLcode (*easy_perform)(CURL *);
    CURLcode (*easy_getinfo)(CURL *, CURLINFO, ...);
    void (*easy_cleanup)(CURL *);
    const char *(*easy_strerror)(CURLcode);
    struct curl_slist *(*slist_append)(struct curl_slist *, const char *);
    void (*slist_free_all)(struct curl_slist *);
    CURLcode (*global_init)(long);
    CURLM *(*multi_init)(void);
    CURLMcode (*multi_setopt)(CURLM *, CURLMoption, ...);
    CURLMcode (*multi_add_handle)(CURLM *, CURL *);
    CURLMcode (*multi_remove_handle)(CURLM *, CURL *);
    CURLMcode (*multi_socket_action)(CURLM *, curl_socket_t, int, int *);
    CURLMsg *(*multi_info_read)(CURLM *, int *);
    CURLMcode (*multi_cleanup)(CURLM *);
} cu;

/* NULL when ready, else why libcurl cannot be used. */
static const char *load_curl(void)
{
    static char err[512];
    static int state; /* 0 not tried, 1 loaded, -1 failed */
    if (state == 1) return NULL;
    if (state == -1) return err;
    void *h = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        state = -1;
        snprintf(err, sizeof err, "HTTP needs libcurl (Debian package libcurl4): %s", dlerror());
        return err;
    }
    struct { void **slot; const char *name; } syms[] = {
        { (void **)&cu.easy_init, "curl_easy_init" },
        { (void **)&cu.easy_setopt, "curl_easy_setopt" },
        { (void **)&cu.easy_perform, "curl_easy_perform" },
        { (void **)&cu.easy_getinfo, "curl_easy_getinfo" },
        { (void **)&cu.easy_cleanup, "curl_easy_cleanup" },
        { (void **)&cu.easy_strerror, "curl_easy_strerror" },
        { (void **)&cu.slist_append, "curl_slist_append" },
        { (void **)&cu.slist_free_all, "curl_slist_free_all" },
        { (void **)&cu.global_init, "curl_global_init" },
        { (void **)&cu.multi_init, "curl_multi_init" },
        { (void **)&cu.multi_setopt, "curl_multi_setopt" },
        { (void **)&cu.multi_add_handle, "curl_multi_add_handle" },
        { (void **)&cu.multi_remove_handle, "curl_multi_remove_handle" },
        { (void **)&cu.multi_socket_action, "curl_multi_socket_action" },
        { (void **)&cu.multi_info_read, "curl_multi_info_read" },
        { (void **)&cu.multi_cleanup, "curl_multi_cleanup" },
    };
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
        *syms[i].slot = dlsym(h, syms[i].name);
        if (!*syms[i].slot) {
            state = -1;
            snprintf(err, sizeof err, "libcurl.so.4 lacks %s", syms[i].name);
            return err;
        }
    }
    cu.global_init(CURL_GLOBAL_DEFAULT);
    state = 1;
    return NULL;
}

typedef struct {
    lua_State *L;
    luaL_Buffer *body;
    size_t got, max;     /* max: stop reading the body past this many bytes */
    int headers_idx;     /* stack index of the headers table */
    long status_line;    /* status seen in the last header block */
} xfer;

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    xfer *x = ud;
    size_t len = size * n;
    if (x->got + len > x->max) {
        size_t room = x->max - x->got;
        luaL_addlstring(x->body, p, room);
        x->got = x->max;
        return 0; /* aborts with CURLE_WRITE_ERROR; the caller knows why */
    }
    luaL_addlstring(x->body, p, len);
    x->got += len;
    return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    xfer *x = ud;
    size_t len = size * n;
    lua_State *L = x->L;
    if (len >= 5 && !memcmp(p, "HTTP/", 5)) {
        /* a new response (after 100-continue or a redirect): start afresh */
        lua_newtable(L);
        lua_replace(L, x->headers_idx);
        return len;
    }
    char *colon = memchr(p, ':', len);
    if (!colon) return len;
    size_t nlen = (size_t)(colon - p);
    char name[256];
    if (nlen == 0 || nlen >= sizeof name) return len;
    for (size_t i = 0; i < nlen; i++) name[i] = (char)tolower((unsigned char)p[i]);
    const char *v = colon + 1, *end = p + len;
    while (v < end && (*v == ' ' || *v == '\t')) v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ')) end--;
    lua_pushlstring(L, name, nlen);
    lua_pushvalue(L, -1);
    lua_rawget(L, x->headers_idx);
    if (lua_isstring(L, -1)) { /* repeated header: join as HTTP allows */
        lua_pushliteral(L, ", ");
        lua_pushlstring(L, v, (size_t)(end - v));
        lua_concat(L, 3);
    } else {
        lua_pop(L, 1);
        lua_pushlstring(L, v, (size_t)(end - v));
    }
    lua_rawset(L, x->headers_idx);
    return len;
}

static int on_progress(void *ud, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    (void)ud; (void)a; (void)b; (void)c; (void)d;
    return mkh_interrupted() ? 1 : 0; /* a Ctrl-C must not wait for a slow server */
}

/* curl's sockets are made here: libcurl 7.88 opens them without
 * SOCK_CLOEXEC, and one in flight while the loop spawns or os.execute
 * runs must not reach the child. */
static curl_socket_t open_cloexec(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    (void)ud; (void)purpose;
    return mkh_socket(a->family, a->socktype, a->protocol, &a->addr); /* a lab's host: made in the lab */
}

/* An attempt given a connected socket (the http probe's TCP-first
 * connect): curl's first socket is that one, already connected, so the
 * service sees one connection per attempt, not one it accepts for
 * nothing and then the request's. */
static curl_socket_t open_given(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    int *given = ud;
    if (*given >= 0) {
        int fd = *given;
        *given = -1;
        return fd;
    }
    return open_cloexec(NULL, purpose, a);
}

/* Said once, of the given socket only: a socket curl opened itself later,
 * on an fd number the given one had, is not connected. */
static int given_is_connected(void *ud, curl_socket_t fd, curlsocktype purpose)
{
    (void)purpose;
    int *first = ud;
    if (*first < 0 || *first != (int)fd) return CURL_SOCKOPT_OK;
    *first = -1;
    return CURL_SOCKOPT_ALREADY_CONNECTED;
}

/* libcurl's own lookup gives up at CURLOPT_TIMEOUT, but then waits for
 * its resolver thread: a name the DNS never answers would hold us for
 * the resolver's retries. So the name is resolved here, within the
 * timeout (which is reduced by the time it took), and the addresses are
 * handed to libcurl in *pinned. Returns 0, or the number of results
 * pushed (nil, err, code). */
static int pin_host(lua_State *L, const char *url, const char *method, double *timeout,
                    struct curl_slist **pinned)
{
    mkh_url u;
    char uerr[128];
    *pinned = NULL;
    if (mkh_parse_url(url, strlen(url), &u, uerr, sizeof uerr) == 0 && u.host_len < 256) {
        char host[256];
        unsigned char bin[16];
        memcpy(host, u.host, u.host_len);
        host[u.host_len] = '\0';
        if (inet_pton(AF_INET, host, bin) != 1 && inet_pton(AF_INET6, host, bin) != 1) {
            struct sockaddr_storage ss;
            socklen_t sl;
            char addrs[1024], rerr[512], entry[1400];
            double t0 = mkh_now();
            if (mkh_resolve(host, u.port, 0, 0, *timeout, &ss, &sl, addrs, sizeof addrs, rerr,
                            sizeof rerr) != 0) {
                lua_pushnil(L);
                lua_pushfstring(L, "%s %s: %s", method, url, rerr);
                lua_pushinteger(L, (lua_Integer)CURLE_COULDNT_RESOLVE_HOST);
                return 3;
            }
            *timeout -= mkh_now() - t0;
            if (*timeout < 0.001) *timeout = 0.001;
            snprintf(entry, sizeof entry, "%s:%d:%s", host, u.port, addrs);
            *pinned = cu.slist_append(NULL, entry);
        }
    }
    return 0;
}

/* The request's `headers` list ({"K: V", ...}) of the options at idx. */
static struct curl_slist *header_slist(lua_State *L, int idx)
{
    struct curl_slist *hdrs = NULL;
    lua_getfield(L, idx, "headers");
    if (lua_istable(L, -1)) {
        /* raw reads up to the raw length: a __len or __index cannot make
         * this loop run for ever or hand curl a NULL */
        lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            const char *h = lua_tostring(L, -1);
            if (h) hdrs = cu.slist_append(hdrs, h);
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    return hdrs;
}

/* What both the blocking and the non-blocking request set. */
static void configure(CURL *c, const char *url, const char *method, double timeout, int insecure,
                      char *errbuf)
{
    cu.easy_setopt(c, CURLOPT_URL, url);
    cu.easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    cu.easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    cu.easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(timeout * 1000.0) + 1);
    cu.easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    cu.easy_setopt(c, CURLOPT_PATH_AS_IS, 1L); /* send the path as given */
    cu.easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, open_cloexec);
    if (insecure) {
        cu.easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
        cu.easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    /* No connection is kept between requests: services restart under
     * chaos, and a cached socket would also be an fd the harness holds. */
    cu.easy_setopt(c, CURLOPT_FRESH_CONNECT, 1L);
    cu.easy_setopt(c, CURLOPT_FORBID_REUSE, 1L);
    if (!strcmp(method, "HEAD")) cu.easy_setopt(c, CURLOPT_NOBODY, 1L);
    else if (strcmp(method, "GET") != 0) cu.easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
}

/* core.http_request{ url=, method=, headers={"K: V",...}, body=, timeout=,
 *   insecure=, max_body= } -> { status=, headers=, body= } | nil, err */
/* The request table both clients take (argument 1); its strings stay on
 * the stack. timeout is required: the defaults live in Lua. */
typedef struct {
    const char *url, *method, *body;
    size_t blen;
    double timeout;
    int insecure;
} request;

static void read_request(lua_State *L, request *r)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "url");
    r->url = luaL_checkstring(L, -1);
    lua_getfield(L, 1, "method");
    r->method = luaL_optstring(L, -1, "GET"); /* HTTP's own default, not ours */
    lua_getfield(L, 1, "body");
    r->blen = 0;
    r->body = lua_tolstring(L, -1, &r->blen);
    lua_getfield(L, 1, "timeout");
    r->timeout = luaL_checknumber(L, -1);
    /* converted to a long of ms by configure() */
    luaL_argcheck(L, r->timeout >= 0 && r->timeout <= 1e9, 1, "timeout must be 0 to 1e9 seconds");
    lua_getfield(L, 1, "insecure");
    r->insecure = lua_toboolean(L, -1);
    lua_pop(L, 1);
}

static int l_http_request(lua_State *L)
{
    request r;
    read_request(L, &r);
    const char *url = r.url, *method = r.method, *body = r.body;
    size_t blen = r.blen;
    double timeout = r.timeout;
    int insecure = r.insecure;
    const char *unusable = load_curl();
    if (unusable) return lmkh_push_fail(L, unusable);
    lua_getfield(L, 1, "max_body");
    lua_Integer max_body = luaL_optinteger(L, -1, (lua_Integer)1 << 40); /* none given: no limit */
    lua_pop(L, 1);

    struct curl_slist *pinned = NULL;
    int nerr = pin_host(L, url, method, &timeout, &pinned);
    if (nerr) return nerr;

    /* A fresh handle per request: a kept one holds a socketpair (an fd
     * the harness would carry for ever); the cost is a few microseconds. */
    CURL *c = cu.easy_init();
    if (!c) {
        cu.slist_free_all(pinned);
        lua_pushnil(L);
        lua_pushliteral(L, "curl_easy_init failed");
        return 2;
    }

    struct curl_slist *hdrs = header_slist(L, 1);

    char errbuf[CURL_ERROR_SIZE] = "";
    configure(c, url, method, timeout, insecure, errbuf);
    if (body) {
        cu.easy_setopt(c, CURLOPT_POSTFIELDS, body);
        cu.easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
        if (!strcmp(method, "GET")) cu.easy_setopt(c, CURLOPT_CUSTOMREQUEST, "GET");
    }
    if (hdrs) cu.easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    if (pinned) cu.easy_setopt(c, CURLOPT_RESOLVE, pinned);
    cu.easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    cu.easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);

    lua_newtable(L); /* result */
    lua_newtable(L); /* headers */
    int headers_idx = lua_gettop(L); /* absolute: the buffer below uses the stack */
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    xfer x = { L, &b, 0, (size_t)max_body, headers_idx, 0 };
    cu.easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    cu.easy_setopt(c, CURLOPT_WRITEDATA, &x);
    cu.easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    cu.easy_setopt(c, CURLOPT_HEADERDATA, &x);
    CURLcode rc = cu.easy_perform(c);
    cu.slist_free_all(hdrs);
    cu.slist_free_all(pinned);
    long status = 0;
    cu.easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    cu.easy_cleanup(c);
    int truncated = rc == CURLE_WRITE_ERROR && x.got >= x.max;
    if (rc != CURLE_OK && !(truncated && status > 0)) {
        const char *why = errbuf[0] ? errbuf : cu.easy_strerror(rc);
        lua_pushnil(L);
        if (rc == CURLE_ABORTED_BY_CALLBACK) lua_pushfstring(L, "%s %s: interrupted", method, url);
        else lua_pushfstring(L, "%s %s: %s", method, url, why);
        lua_pushinteger(L, (lua_Integer)rc);
        return 3;
    }
    luaL_pushresult(&b);
    lua_setfield(L, -3, "body");
    lua_setfield(L, -2, "headers");
    lua_pushinteger(L, status);
    lua_setfield(L, -2, "status");
    if (truncated) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "truncated");
    }
    return 1;
}

/* ---------------------------------------------------------------------
 * core.http_start{ url=, method=, headers=, body=, timeout=, insecure= }
 *   -> attempt | nil, err, code
 * One request on its own multi handle, never blocking (but for the name
 * lookup, bounded by the timeout). Nothing is sent before the first
 * attempt:perform(). The wait loop polls attempt:fd() (an epoll fd holding
 * the sockets curl asked to watch: core.poll only waits for input, and a
 * connecting socket needs output) and calls attempt:perform() when it is
 * readable or attempt:wake() has passed. The body is not read (the probe
 * needs the status only) unless full = true (mk.http_request while chaos
 * faults are due: then attempt:response() gives the body and header
 * lines). reuse = true takes the multi handle from the pool and returns it
 * there when the request is over (see pool_put). */
#define ATTEMPT_MT "mkharness.http_attempt"

typedef struct {
    CURLM *m;
    CURL *e;
    int ep;            /* epoll fd; -1 once closed */
    double timer_at;   /* when curl wants its timeout action; < 0: none */
    int done;
    CURLcode rc;
    long status;
    struct curl_slist *hdrs, *pinned;
    char what[320];    /* "METHOD url" for messages */
    char errbuf[CURL_ERROR_SIZE];
    /* full = true: the response is kept (mk.http_request in the loop);
     * it outlives the transfer, freed by close() or the collector */
    int full, truncated;
    int reuse;         /* the multi handle and epoll fd go back to the pool */
    int given;         /* a socket already connected to the URL's host, for
                        * curl's first; -1 once curl has it (or none) */
    int first;         /* that socket's number, to tell curl it is connected */
    char *body, *hdr;
    size_t blen, bcap, bmax, hlen, hcap;
} attempt;

static int on_socket(CURL *e, curl_socket_t s, int what, void *ud, void *sp)
{
    (void)e; (void)sp;
    attempt *a = ud;
    if (!a) return 0; /* an idle pooled handle: nothing of ours is watched */
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(a->ep, EPOLL_CTL_DEL, s, NULL); /* may be closed already: fine */
        return 0;
    }
    struct epoll_event ev = { 0 };
    ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
    ev.data.fd = s;
    if (epoll_ctl(a->ep, EPOLL_CTL_MOD, s, &ev) != 0 && errno == ENOENT)
        epoll_ctl(a->ep, EPOLL_CTL_ADD, s, &ev);
    return 0;
}

static int on_timer(CURLM *m, long ms, void *ud)
{
    (void)m;
    attempt *a = ud;
    if (!a) return 0;
    a->timer_at = ms < 0 ? -1 : mkh_now() + (double)ms / 1000.0;
    return 0;
}

static size_t no_body(char *p, size_t size, size_t n, void *ud)
{
    (void)p; (void)size; (void)n; (void)ud;
    return 0; /* the status is known by now: stop (CURLE_WRITE_ERROR) */
}

/* Appends n bytes to *buf (grown by doubling); 0 when out of memory. */
static int grow_append(char **buf, size_t *len, size_t *cap, const char *p, size_t n)
{
    if (*len + n > *cap) {
        size_t c = *cap ? *cap : 4096;
        while (c < *len + n) c *= 2;
        char *nb = realloc(*buf, c);
        if (!nb) return 0;
        *buf = nb, *cap = c;
    }
    memcpy(*buf + *len, p, n);
    *len += n;
    return 1;
}

static size_t keep_body(char *p, size_t size, size_t n, void *ud)
{
    attempt *a = ud;
    size_t len = size * n, room = a->bmax - a->blen;
    if (len > room) {
        a->truncated = 1;
        grow_append(&a->body, &a->blen, &a->bcap, p, room);
        return 0; /* aborts with CURLE_WRITE_ERROR; response() says why */
    }
    return grow_append(&a->body, &a->blen, &a->bcap, p, len) ? len : 0;
}

/* The raw header lines of the last response; Lua splits them, as
 * on_header does for the blocking client. */
static size_t keep_header(char *p, size_t size, size_t n, void *ud)
{
    attempt *a = ud;
    size_t len = size * n;
    if (len >= 5 && !memcmp(p, "HTTP/", 5)) a->hlen = 0; /* a new response: start afresh */
    return grow_append(&a->hdr, &a->hlen, &a->hcap, p, len) ? len : 0;
}

/* Idle multi handles, each with its epoll fd, for the next request of
 * the wait loop: making them (curl's wakeup socketpair, its tables, the
 * fd probes that mark the pair close-on-exec) was a fifth of a request to
 * a local server. A pooled handle holds no connection (every transfer
 * forbids reuse) and no DNS entry that a request would use unrenewed
 * (each pins its own addresses, replacing any entry of that name, and
 * takes nothing else from the cache), but it holds three fds: core.http_release() closes them (a chaos run's end). */
#define POOL_MAX 4
static struct { CURLM *m; int ep; } pool[POOL_MAX];
static int npool;

static void multi_close(CURLM *m, int ep)
{
    if (m) cu.multi_cleanup(m);
    if (ep >= 0) close(ep);
}

/* Keeps an emptied handle if it is clean (nothing left to watch); else
 * closes it. */
static void pool_put(CURLM *m, int ep)
{
    struct epoll_event ev;
    cu.multi_setopt(m, CURLMOPT_SOCKETDATA, NULL);
    cu.multi_setopt(m, CURLMOPT_TIMERDATA, NULL);
    if (npool < POOL_MAX && epoll_wait(ep, &ev, 1, 0) == 0) {
        pool[npool].m = m, pool[npool].ep = ep;
        npool++;
    } else
        multi_close(m, ep);
}

/* core.http_release(): closes the pooled handles (their fds) */
static int l_http_release(lua_State *L)
{
    (void)L;
    while (npool > 0) {
        npool--;
        multi_close(pool[npool].m, pool[npool].ep);
    }
    return 0;
}

static void attempt_free(attempt *a)
{
    if (a->given >= 0) close(a->given); /* curl never asked for it */
    a->given = -1;
    if (a->m) {
        if (a->e) cu.multi_remove_handle(a->m, a->e);
        if (a->reuse && a->ep >= 0) pool_put(a->m, a->ep);
        else multi_close(a->m, a->ep);
        a->m = NULL;
        a->ep = -1;
    }
    if (a->e) cu.easy_cleanup(a->e);
    a->e = NULL;
    cu.slist_free_all(a->hdrs);
    cu.slist_free_all(a->pinned);
    a->hdrs = a->pinned = NULL;
    if (a->ep >= 0) close(a->ep);
    a->ep = -1;
}

static int l_attempt_close(lua_State *L)
{
    attempt *a = luaL_checkudata(L, 1, ATTEMPT_MT);
    attempt_free(a);
    free(a->body);
    free(a->hdr);
    a->body = a->hdr = NULL;
    a->blen = a->hlen = a->bcap = a->hcap = 0;
    return 0;
}

/* An attempt nobody closed (its coroutine was dropped) may be collected
 * after the pool was released: its handle is closed, not pooled. */
static int l_attempt_gc(lua_State *L)
{
    attempt *a = luaL_checkudata(L, 1, ATTEMPT_MT);
    a->reuse = 0;
    return l_attempt_close(L);
}

/* attempt:response() -> body, raw header lines, truncated (full = true
 * attempts, once perform() gave a status) */
static int l_attempt_response(lua_State *L)
{
    attempt *a = luaL_checkudata(L, 1, ATTEMPT_MT);
    lua_pushlstring(L, a->body ? a->body : "", a->blen);
    lua_pushlstring(L, a->hdr ? a->hdr : "", a->hlen);
    lua_pushboolean(L, a->truncated);
    return 3;
}

/* libcurl 7.88's multi handle makes a socketpair (its wakeup pipe) without
 * SOCK_CLOEXEC. It takes the two lowest free fds: found before the init,
 * they are marked after it if they turned into sockets lacking the flag. */
static CURLM *multi_init_cloexec(void)
{
    int lo[2];
    lo[0] = fcntl(0, F_DUPFD_CLOEXEC, 0);
    lo[1] = lo[0] < 0 ? -1 : fcntl(0, F_DUPFD_CLOEXEC, 0);
    for (int i = 0; i < 2; i++)
        if (lo[i] >= 0) close(lo[i]);
    CURLM *m = cu.multi_init();
    for (int i = 0; m && i < 2; i++) {
        struct stat sb;
        int fl;
        if (lo[i] >= 0 && fstat(lo[i], &sb) == 0 && S_ISSOCK(sb.st_mode)
            && (fl = fcntl(lo[i], F_GETFD)) >= 0 && !(fl & FD_CLOEXEC))
            fcntl(lo[i], F_SETFD, fl | FD_CLOEXEC);
    }
    return m;
}

/* Runs what curl is due: its timer, then the sockets epoll says are
 * ready; never waits. A few rounds, as an action often asks for the next
 * one at once (0 ms), but none begun once `due` (mkh_now() time, <= 0:
 * none) has passed: a loop timer due then fires between two calls, not
 * after the whole exchange (connect, send, receive, close). */
static void attempt_drive(attempt *a, double due)
{
    int running = 0;
    for (int round = 0; round < 4 && !a->done; round++) {
        if (round > 0 && due > 0 && mkh_now() >= due) break;
        int acted = 0;
        if (a->timer_at >= 0 && mkh_now() >= a->timer_at) {
            a->timer_at = -1;
            cu.multi_socket_action(a->m, CURL_SOCKET_TIMEOUT, 0, &running);
            acted = 1;
        }
        struct epoll_event ev[8];
        int n = epoll_wait(a->ep, ev, 8, 0);
        for (int i = 0; i < n; i++) {
            int mask = 0;
            if (ev[i].events & (EPOLLIN | EPOLLHUP)) mask |= CURL_CSELECT_IN;
            if (ev[i].events & EPOLLOUT) mask |= CURL_CSELECT_OUT;
            if (ev[i].events & EPOLLERR) mask |= CURL_CSELECT_ERR;
            cu.multi_socket_action(a->m, ev[i].data.fd, mask, &running);
            acted = 1;
        }
        int left;
        CURLMsg *msg;
        while ((msg = cu.multi_info_read(a->m, &left))) {
            if (msg->msg == CURLMSG_DONE && msg->easy_handle == a->e) {
                a->done = 1;
                a->rc = msg->data.result;
                cu.easy_getinfo(a->e, CURLINFO_RESPONSE_CODE, &a->status);
            }
        }
        if (!acted) break;
    }
    if (a->done) attempt_free(a); /* the sockets go now, not when the collector runs */
}

/* attempt:perform([due]) -> nil (in flight) | status | false, err, code;
 * due: the wait loop's next timer (core.now() time), past which no
 * further step is begun in this call */
static int l_attempt_perform(lua_State *L)
{
    attempt *a = luaL_checkudata(L, 1, ATTEMPT_MT);
    double due = luaL_optnumber(L, 2, 0);
    if (!a->done && !a->m) return luaL_error(L, "http attempt: perform after close");
    if (!a->done) attempt_drive(a, due);
    if (!a->done) return 0;
    /* an answer with a body ends in the write error no_body asked for
     * (a full attempt: only when the body passed max_body) */
    if (a->status > 0 && (a->rc == CURLE_OK || (a->rc == CURLE_WRITE_ERROR && (!a->full || a->truncated)))) {
        lua_pushinteger(L, a->status);
        return 1;
    }
    lua_pushboolean(L, 0);
    if (a->rc == CURLE_ABORTED_BY_CALLBACK) lua_pushfstring(L, "%s: interrupted", a->what);
    else lua_pushfstring(L, "%s: %s", a->what, a->errbuf[0] ? a->errbuf : cu.easy_strerror(a->rc));
    lua_pushinteger(L, (lua_Integer)a->rc);
    return 3;
}

/* attempt:fd() -> the epoll fd to poll for input, nil once finished */
static int l_attempt_fd(lua_State *L)
{
    attempt *a = luaL_checkudata(L, 1, ATTEMPT_MT);
    if (a->ep < 0) return 0;
    lua_pushinteger(L, a->ep);
    return 1;
}

/* attempt:wake() -> when curl's timer is due (core.now() time), or nil */
static int l_attempt_wake(lua_State *L)
{
    attempt *a = luaL_checkudata(L, 1, ATTEMPT_MT);
    if (a->done || a->timer_at < 0) return 0;
    lua_pushnumber(L, a->timer_at);
    return 1;
}

static int l_http_start(lua_State *L)
{
    request r;
    read_request(L, &r);
    const char *url = r.url, *method = r.method, *body = r.body;
    size_t blen = r.blen;
    double timeout = r.timeout;
    int insecure = r.insecure;
    /* socket = a connected fd: the attempt's from here on, closed on
     * every path that does not hand it to curl */
    lua_getfield(L, 1, "socket");
    int given = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : -1;
    lua_pop(L, 1);
    const char *unusable = load_curl();
    if (unusable) {
        if (given >= 0) close(given);
        return lmkh_push_fail(L, unusable);
    }

    struct curl_slist *pinned = NULL;
    int nerr = pin_host(L, url, method, &timeout, &pinned);
    if (nerr) {
        if (given >= 0) close(given);
        return nerr;
    }

    attempt *a = lua_newuserdatauv(L, sizeof *a, 0);
    memset(a, 0, sizeof *a);
    a->ep = -1;
    a->given = given; /* the collector closes it, should anything below fail */
    a->timer_at = -1;
    a->pinned = pinned;
    luaL_setmetatable(L, ATTEMPT_MT);
    snprintf(a->what, sizeof a->what, "%s %s", method, url);
    lua_getfield(L, 1, "reuse");
    a->reuse = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (a->reuse && npool > 0) {
        npool--;
        a->m = pool[npool].m, a->ep = pool[npool].ep;
    } else {
        a->ep = epoll_create1(EPOLL_CLOEXEC);
        if (a->ep < 0) return lmkh_push_errno(L, "epoll_create1");
        a->m = multi_init_cloexec();
    }
    a->e = cu.easy_init();
    if (!a->m || !a->e) {
        attempt_free(a);
        return lmkh_push_fail(L, "curl_multi_init/curl_easy_init failed");
    }
    a->hdrs = header_slist(L, 1);
    configure(a->e, url, method, timeout, insecure, a->errbuf);
    if (body) {
        /* copied: the Lua string may be gone before the request is sent */
        cu.easy_setopt(a->e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
        cu.easy_setopt(a->e, CURLOPT_COPYPOSTFIELDS, body);
        if (!strcmp(method, "GET")) cu.easy_setopt(a->e, CURLOPT_CUSTOMREQUEST, "GET");
    }
    if (a->hdrs) cu.easy_setopt(a->e, CURLOPT_HTTPHEADER, a->hdrs);
    if (a->pinned) cu.easy_setopt(a->e, CURLOPT_RESOLVE, a->pinned);
    /* addresses curl looks up itself expire at once: a reused multi
     * handle's cache gives a later request only its own pinned ones */
    cu.easy_setopt(a->e, CURLOPT_DNS_CACHE_TIMEOUT, 0L);
    if (a->given >= 0) {
        a->first = a->given;
        cu.easy_setopt(a->e, CURLOPT_OPENSOCKETFUNCTION, open_given);
        cu.easy_setopt(a->e, CURLOPT_OPENSOCKETDATA, &a->given);
        cu.easy_setopt(a->e, CURLOPT_SOCKOPTFUNCTION, given_is_connected);
        cu.easy_setopt(a->e, CURLOPT_SOCKOPTDATA, &a->first);
        /* the socket goes to the URL's host: no proxy in between */
        cu.easy_setopt(a->e, CURLOPT_PROXY, "");
    }
    lua_getfield(L, 1, "full");
    a->full = lua_toboolean(L, -1);
    lua_getfield(L, 1, "max_body");
    a->bmax = (size_t)luaL_optinteger(L, -1, (lua_Integer)1 << 40);
    lua_pop(L, 2);
    if (a->full) {
        cu.easy_setopt(a->e, CURLOPT_WRITEFUNCTION, keep_body);
        cu.easy_setopt(a->e, CURLOPT_WRITEDATA, a);
        cu.easy_setopt(a->e, CURLOPT_HEADERFUNCTION, keep_header);
        cu.easy_setopt(a->e, CURLOPT_HEADERDATA, a);
    } else
        cu.easy_setopt(a->e, CURLOPT_WRITEFUNCTION, no_body);
    cu.multi_setopt(a->m, CURLMOPT_SOCKETFUNCTION, on_socket);
    cu.multi_setopt(a->m, CURLMOPT_SOCKETDATA, a);
    cu.multi_setopt(a->m, CURLMOPT_TIMERFUNCTION, on_timer);
    cu.multi_setopt(a->m, CURLMOPT_TIMERDATA, a);
    if (cu.multi_add_handle(a->m, a->e) != CURLM_OK) {
        attempt_free(a);
        return lmkh_push_fail(L, "curl_multi_add_handle failed");
    }
    /* curl asks for an action at once (0 ms); should a reused handle not
     * say so, the first perform() looks anyway */
    if (a->timer_at < 0) a->timer_at = mkh_now();
    /* nothing is sent yet: the first perform() connects, once the loop
     * has had its look at the timers */
    return 1;
}

void lmkh_open_http(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "perform", l_attempt_perform }, { "fd", l_attempt_fd }, { "wake", l_attempt_wake },
        { "close", l_attempt_close }, { "response", l_attempt_response }, { NULL, NULL },
    };
    lmkh_new_class(L, ATTEMPT_MT, methods, l_attempt_gc);
    lua_pushcfunction(L, l_http_start);
    lua_setfield(L, -2, "http_start");
    lua_pushcfunction(L, l_http_request);
    lua_setfield(L, -2, "http_request");
    lua_pushcfunction(L, l_http_release);
    lua_setfield(L, -2, "http_release");
}
