/* The fault proxy's Lua binding: core.proxy(...) -> a userdata around the
 * engine of proxy.c. Arguments arrive validated by lua/mkharness/proxy.lua;
 * OS failures come back as nil, message. */
#define _GNU_SOURCE
#include "lmkh.h"
#include "proxy.h"

#include <float.h>

#include <lauxlib.h>
#include <lua.h>

#define PROXY_MT "mkharness.proxy"

typedef struct { mkh_proxy *p; } lproxy;

static mkh_proxy *check_proxy(lua_State *L, int i)
{
    lproxy *lp = (lproxy *)luaL_checkudata(L, i, PROXY_MT);
    if (!lp->p) luaL_error(L, "proxy is closed");
    return lp->p;
}

static int push_fail(lua_State *L, const char *msg)
{
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

/* core.proxy(listen_host, listen_port, upstream_host, upstream_port, timeout) */
static int l_proxy(lua_State *L)
{
    const char *lhost = luaL_checkstring(L, 1);
    int lport = (int)luaL_checkinteger(L, 2);
    const char *uhost = luaL_checkstring(L, 3);
    int uport = (int)luaL_checkinteger(L, 4);
    double timeout = luaL_optnumber(L, 5, 5.0);
    lproxy *lp = lua_newuserdatauv(L, sizeof *lp, 0);
    lp->p = NULL;
    luaL_setmetatable(L, PROXY_MT);
    char err[512];
    lp->p = mkh_proxy_new(lhost, lport, uhost, uport, timeout, err, sizeof err);
    if (!lp->p) return push_fail(L, err);
    return 1;
}

/* p:start() -> port | nil, err */
static int l_start(lua_State *L)
{
    mkh_proxy *p = check_proxy(L, 1);
    char err[512];
    if (mkh_proxy_start(p, err, sizeof err) != 0) return push_fail(L, err);
    lua_pushinteger(L, mkh_proxy_port(p));
    return 1;
}

static int l_stop(lua_State *L)
{
    mkh_proxy_stop(check_proxy(L, 1));
    return 0;
}

static int l_port(lua_State *L)
{
    int port = mkh_proxy_port(check_proxy(L, 1));
    if (!port) return 0;
    lua_pushinteger(L, port);
    return 1;
}

/* p:state() -> running, listening */
static int l_state(lua_State *L)
{
    mkh_proxy *p = check_proxy(L, 1);
    lua_pushboolean(L, mkh_proxy_running(p));
    lua_pushboolean(L, mkh_proxy_listening(p));
    return 2;
}

/* Field k of the table at index t: a number in [lo, hi], else argument error. */
static double num_field(lua_State *L, int t, const char *k, double lo, double hi)
{
    lua_getfield(L, t, k);
    int isnum;
    double v = lua_tonumberx(L, -1, &isnum);
    lua_pop(L, 1);
    if (!isnum || !(v >= lo && v <= hi))
        luaL_error(L, "proxy faults: '%s' must be a number from %g to %g", k, lo, hi);
    return v;
}

/* The scope of fault i, from the subtable `name`: { dirs = 0-3, probability = 0-1 } */
static void scope_field(lua_State *L, mkh_proxy_faults *f, int i, const char *name)
{
    if (lua_getfield(L, 2, name) != LUA_TTABLE) luaL_error(L, "proxy faults: '%s' must be a table", name);
    int t = lua_gettop(L);
    f->scope[i].dirs = (int)num_field(L, t, "dirs", 0, 3);
    f->scope[i].probability = num_field(L, t, "probability", 0, 1);
    lua_pop(L, 1);
}

/* p:faults(latency_s, jitter_s, bytes_per_s, blackhole): the short form,
 * each fault both ways on every connection (0 / false: off) */
static int faults_plain(lua_State *L, mkh_proxy *p)
{
    mkh_proxy_faults f = { 0 };
    f.latency = luaL_checknumber(L, 2);
    f.jitter = luaL_checknumber(L, 3);
    f.bandwidth = luaL_checknumber(L, 4);
    /* the proxy thread turns these into deadlines and poll timeouts */
    luaL_argcheck(L, f.latency >= 0 && f.latency <= 86400, 2, "latency must be 0 to 86400 seconds");
    luaL_argcheck(L, f.jitter >= 0 && f.jitter <= 86400, 3, "jitter must be 0 to 86400 seconds");
    luaL_argcheck(L, f.bandwidth >= 0 && f.bandwidth <= DBL_MAX, 4, "bandwidth must be a finite number >= 0");
    int on[MKH_F_COUNT] = { 0 };
    on[MKH_F_LATENCY] = f.latency > 0 || f.jitter > 0;
    on[MKH_F_BANDWIDTH] = f.bandwidth > 0;
    on[MKH_F_BLACKHOLE] = lua_toboolean(L, 5);
    for (int i = 0; i < MKH_F_COUNT; i++) {
        f.scope[i].dirs = on[i] ? MKH_DIR_UP | MKH_DIR_DOWN : 0;
        f.scope[i].probability = 1;
    }
    mkh_proxy_set_faults(p, &f);
    return 0;
}

/* p:faults{ latency = { dirs =, probability =, seconds =, jitter = },
 *           bandwidth = { dirs =, probability =, rate = }, blackhole = { dirs =, probability = },
 *           slicer = { dirs =, probability =, size =, variation =, delay = },
 *           limit = { dirs =, probability =, bytes = } } (seconds, bytes) */
static int l_faults(lua_State *L)
{
    mkh_proxy *p = check_proxy(L, 1);
    mkh_proxy_faults f = { 0 };
    if (!lua_istable(L, 2)) return faults_plain(L, p);
    static const char *const names[MKH_F_COUNT] = { "latency", "bandwidth", "blackhole", "slicer", "limit" };
    for (int i = 0; i < MKH_F_COUNT; i++) scope_field(L, &f, i, names[i]);
    /* the proxy thread turns these into deadlines and poll timeouts */
    lua_getfield(L, 2, "latency");
    f.latency = num_field(L, -1, "seconds", 0, 86400);
    f.jitter = num_field(L, -1, "jitter", 0, 86400);
    lua_getfield(L, 2, "bandwidth");
    f.bandwidth = num_field(L, -1, "rate", 0, DBL_MAX);
    lua_getfield(L, 2, "slicer");
    /* sizes stay far below SIZE_MAX: a piece is at most a queued chunk */
    f.slice_size = (size_t)num_field(L, -1, "size", 0, 1 << 30);
    f.slice_variation = (size_t)num_field(L, -1, "variation", 0, 1 << 30);
    f.slice_delay = num_field(L, -1, "delay", 0, 86400);
    lua_getfield(L, 2, "limit");
    f.limit = (unsigned long long)num_field(L, -1, "bytes", 0, 9007199254740992.0);
    lua_pop(L, 4);
    mkh_proxy_set_faults(p, &f);
    return 0;
}

static int l_down(lua_State *L)
{
    mkh_proxy_down(check_proxy(L, 1));
    return 0;
}

/* p:up() -> true | nil, err */
static int l_up(lua_State *L)
{
    char err[512];
    if (mkh_proxy_up(check_proxy(L, 1), err, sizeof err) != 0) return push_fail(L, err);
    lua_pushboolean(L, 1);
    return 1;
}

/* p:reset([probability]) */
static int l_reset(lua_State *L)
{
    mkh_proxy *p = check_proxy(L, 1);
    double prob = luaL_optnumber(L, 2, 1);
    luaL_argcheck(L, prob >= 0 && prob <= 1, 2, "probability must be 0 to 1");
    mkh_proxy_reset(p, prob);
    return 0;
}

static void set_int(lua_State *L, const char *k, unsigned long long v)
{
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, -2, k);
}

static int l_stats(lua_State *L)
{
    mkh_proxy_stats s;
    mkh_proxy_get_stats(check_proxy(L, 1), &s);
    lua_createtable(L, 0, 7);
    set_int(L, "connections", s.connections);
    set_int(L, "active", s.active);
    set_int(L, "bytes_up", s.bytes_up);
    set_int(L, "bytes_down", s.bytes_down);
    set_int(L, "upstream_errors", s.upstream_errors);
    set_int(L, "resets", s.resets);
    set_int(L, "limited", s.limited);
    return 1;
}

/* __gc / __close / p:close(): stop the thread, close everything, free */
static int l_close(lua_State *L)
{
    lproxy *lp = (lproxy *)luaL_checkudata(L, 1, PROXY_MT);
    mkh_proxy_free(lp->p);
    lp->p = NULL;
    return 0;
}

static const luaL_Reg methods[] = {
    {"start", l_start}, {"stop", l_stop}, {"port", l_port}, {"state", l_state},
    {"faults", l_faults}, {"down", l_down}, {"up", l_up}, {"reset", l_reset},
    {"stats", l_stats}, {"close", l_close}, {NULL, NULL}
};

void lmkh_open_proxy(lua_State *L)
{
    luaL_newmetatable(L, PROXY_MT);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_close);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);
    lua_pushcfunction(L, l_proxy);
    lua_setfield(L, -2, "proxy");
}
