/* HTTP through libcurl: core.http_request{...}, used by mk.http_request,
 * mk.get and the HTTP readiness probe.
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* core.http_request{ url=, method=, headers={"K: V",...}, body=, timeout=,
 *   insecure=, max_body= } -> { status=, headers=, body= } | nil, err */
static int l_http_request(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    const char *unusable = load_curl();
    if (unusable) {
        lua_pushnil(L);
        lua_pushstring(L, unusable);
        return 2;
    }
    lua_getfield(L, 1, "url");
    const char *url = luaL_checkstring(L, -1);
    lua_getfield(L, 1, "method");
    const char *method = luaL_optstring(L, -1, "GET");
    lua_getfield(L, 1, "body");
    size_t blen = 0;
    const char *body = lua_tolstring(L, -1, &blen);
    lua_getfield(L, 1, "timeout");
    double timeout = luaL_optnumber(L, -1, 30);
    /* converted to a long of ms below */
    luaL_argcheck(L, timeout >= 0 && timeout <= 1e9, 1, "timeout must be 0 to 1e9 seconds");
    lua_getfield(L, 1, "insecure");
    int insecure = lua_toboolean(L, -1);
    lua_getfield(L, 1, "max_body");
    lua_Integer max_body = luaL_optinteger(L, -1, (lua_Integer)1 << 40);
    lua_pop(L, 2);

    /* libcurl's own lookup gives up at CURLOPT_TIMEOUT, but then waits for
     * its resolver thread: a name the DNS never answers would hold us for
     * the resolver's retries. So the name is resolved here, within the
     * timeout, and the addresses are handed to libcurl. */
    struct curl_slist *pinned = NULL;
    mkh_url u;
    char uerr[128];
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
            if (mkh_resolve(host, u.port, 0, 0, timeout, &ss, &sl, addrs, sizeof addrs, rerr,
                            sizeof rerr) != 0) {
                lua_pushnil(L);
                lua_pushfstring(L, "%s %s: %s", method, url, rerr);
                lua_pushinteger(L, (lua_Integer)CURLE_COULDNT_RESOLVE_HOST);
                return 3;
            }
            timeout -= mkh_now() - t0;
            if (timeout < 0.001) timeout = 0.001;
            snprintf(entry, sizeof entry, "%s:%d:%s", host, u.port, addrs);
            pinned = cu.slist_append(NULL, entry);
        }
    }

    /* A fresh handle per request: a kept one holds a socketpair (an fd
     * the harness would carry for ever); the cost is a few microseconds. */
    CURL *c = cu.easy_init();
    if (!c) {
        cu.slist_free_all(pinned);
        lua_pushnil(L);
        lua_pushliteral(L, "curl_easy_init failed");
        return 2;
    }

    struct curl_slist *hdrs = NULL;
    lua_getfield(L, 1, "headers");
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

    char errbuf[CURL_ERROR_SIZE] = "";
    cu.easy_setopt(c, CURLOPT_URL, url);
    cu.easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    cu.easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    cu.easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(timeout * 1000.0) + 1);
    cu.easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    cu.easy_setopt(c, CURLOPT_PATH_AS_IS, 1L); /* send the path as given */
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

void lmkh_open_http(lua_State *L)
{
    lua_pushcfunction(L, l_http_request);
    lua_setfield(L, -2, "http_request");
}
