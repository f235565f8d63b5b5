/* Parsers of untrusted text (parse.c) and signal names, for Lua. */
#define _GNU_SOURCE
#include "lmkh.h"
#include "mkh.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

static int l_signum(lua_State *L)
{
    int sig;
    if (lua_type(L, 1) == LUA_TNUMBER) {
        lua_Integer n = luaL_checkinteger(L, 1);
        sig = (n >= 1 && n < NSIG) ? (int)n : -1;
    } else {
        sig = mkh_signum(luaL_checkstring(L, 1));
    }
    if (sig < 0) return 0;
    lua_pushinteger(L, sig);
    return 1;
}


static int l_signame(lua_State *L)
{
    const char *n = mkh_signame((int)luaL_checkinteger(L, 1));
    if (!n) return 0;
    lua_pushstring(L, n);
    return 1;
}


static int l_split(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    char *out = lua_newuserdatauv(L, len + 1, 0);
    char err[256];
    int n = mkh_split_words(s, len, out, err, sizeof err);
    if (n < 0) return lmkh_push_fail(L, err);
    lua_createtable(L, n, 0);
    const char *p = out;
    for (int i = 1; i <= n; i++) {
        lua_pushstring(L, p);
        lua_rawseti(L, -2, i);
        p += strlen(p) + 1;
    }
    return 1;
}


static int l_parse_url(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    mkh_url u;
    char err[256];
    if (mkh_parse_url(s, len, &u, err, sizeof err) != 0) return lmkh_push_fail(L, err);
    lua_createtable(L, 0, 4);
    lua_pushstring(L, u.https ? "https" : "http");
    lua_setfield(L, -2, "scheme");
    lua_pushlstring(L, u.host, u.host_len);
    lua_setfield(L, -2, "host");
    lua_pushinteger(L, u.port);
    lua_setfield(L, -2, "port");
    if (u.path_len == 0 || u.path[0] != '/') {
        lua_pushliteral(L, "/");
        lua_pushlstring(L, u.path, u.path_len);
        lua_concat(L, 2);
    } else {
        lua_pushlstring(L, u.path, u.path_len);
    }
    lua_setfield(L, -2, "path");
    return 1;
}


/* core.parse_status("2xx") -> "class", 2 | "code", 404 | nil */
static int l_parse_status(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    int v;
    int kind = mkh_parse_status(s, len, &v);
    if (kind < 0) return 0;
    lua_pushstring(L, kind == MKH_STATUS_CLASS ? "class" : "code");
    lua_pushinteger(L, v);
    return 2;
}


static int l_parse_notify(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    mkh_notify n;
    memset(&n, 0, sizeof n);
    mkh_parse_notify(s, len, &n);
    lua_createtable(L, 0, 6);
    lua_pushboolean(L, n.ready);
    lua_setfield(L, -2, "ready");
    lua_pushboolean(L, n.stopping);
    lua_setfield(L, -2, "stopping");
    if (n.has_status) {
        lua_pushstring(L, n.status);
        lua_setfield(L, -2, "status");
    }
    if (n.has_errno) {
        lua_pushinteger(L, n.errnum);
        lua_setfield(L, -2, "errno");
    }
    if (n.mainpid) {
        lua_pushinteger(L, n.mainpid);
        lua_setfield(L, -2, "mainpid");
    }
    return 1;
}

/* A chaos run's op lines for events.jsonl, one per operation, put
 * together here in one buffer and taken as one string per batch: a Lua
 * string per operation cost an allocation each, and memory the collector
 * had to come back for. The buffer is reused from batch to batch; a batch
 * is made and taken within one call of the run's flush, so the states of
 * one process cannot interleave in it. */
static struct {
    char *p;
    size_t len, cap;
} ops;

static void op_put(lua_State *L, const char *s, size_t n)
{
    if (ops.cap - ops.len < n) {
        size_t cap = ops.cap ? ops.cap : (size_t)64 << 10;
        while (cap - ops.len < n) {
            if (cap > ((size_t)-1) / 2) {
                luaL_error(L, "op lines: too long");
                return;
            }
            cap *= 2;
        }
        char *p = realloc(ops.p, cap);
        if (!p) {
            luaL_error(L, "op lines: out of memory");
            return;
        }
        ops.p = p, ops.cap = cap;
    }
    memcpy(ops.p + ops.len, s, n);
    ops.len += n;
}

/* core.op_add(head, index, t, t0, tail, value): appends head .. index ..
 * ',"t":' .. t .. ',"t0":' .. t0 .. tail .. value .. "}" and a newline,
 * the times as "%.9f" writes them, value an integer or text (already
 * JSON). */
static int l_op_add(lua_State *L)
{
    size_t hl, tl, vl = 0;
    const char *head = luaL_checklstring(L, 1, &hl);
    lua_Integer index = luaL_checkinteger(L, 2);
    double t = (double)luaL_checknumber(L, 3), t0 = (double)luaL_checknumber(L, 4);
    const char *tail = luaL_checklstring(L, 5, &tl);
    const char *v = NULL;
    char num[32], buf[MKH_FIXED9_MAX];
    if (lua_isinteger(L, 6)) {
        int n = snprintf(num, sizeof num, LUA_INTEGER_FMT, (LUAI_UACINT)lua_tointeger(L, 6));
        v = num, vl = (size_t)n;
    } else
        v = luaL_checklstring(L, 6, &vl);
    op_put(L, head, hl);
    int n = snprintf(buf, sizeof buf, LUA_INTEGER_FMT, (LUAI_UACINT)index);
    op_put(L, buf, (size_t)n);
    op_put(L, ",\"t\":", 5);
    op_put(L, buf, mkh_fixed9(buf, t));
    op_put(L, ",\"t0\":", 6);
    op_put(L, buf, mkh_fixed9(buf, t0));
    op_put(L, tail, tl);
    op_put(L, v, vl);
    op_put(L, "}\n", 2);
    return 0;
}

/* core.op_take() -> the lines added since the last take, joined by
 * newlines (none after the last), or nil when there are none */
static int l_op_take(lua_State *L)
{
    if (ops.len == 0) return 0;
    lua_pushlstring(L, ops.p, ops.len - 1);
    ops.len = 0;
    if (ops.cap > 8u << 20) { /* a batch of huge values: give that back */
        free(ops.p);
        ops.p = NULL, ops.cap = 0;
    }
    return 1;
}

/* core.fixed9(t) -> string.format("%.9f", t), for the tests */
static int l_fixed9(lua_State *L)
{
    char buf[MKH_FIXED9_MAX];
    lua_pushlstring(L, buf, mkh_fixed9(buf, (double)luaL_checknumber(L, 1)));
    return 1;
}

void lmkh_open_text(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"signum", l_signum},
        {"signame", l_signame},
        {"split", l_split},
        {"parse_url", l_parse_url},
        {"parse_status", l_parse_status},
        {"parse_notify", l_parse_notify},
        {"op_add", l_op_add},
        {"op_take", l_op_take},
        {"fixed9", l_fixed9},
        {NULL, NULL}
    };
    luaL_setfuncs(L, funcs, 0);
}
