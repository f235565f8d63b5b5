/* mkharness.core: the Lua binding of the engine, assembled. Each userdata
 * type has its own file (lproc.c, lwatch.c, lscanner.c, ldgram.c, lecho.c,
 * lproxy.c, llab.c, ltcp.c), plain functions are grouped by topic (lrun.c, ltext.c,
 * lnet.c, lfile.c, lhttp.c); this file holds what they share and the
 * module's entry point. The friendly API, option checking and composition
 * live in lua/mkharness/. */
#define _GNU_SOURCE
#include "lmkh.h"
#include "mkh.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

static mkh_interrupt_fn interrupt_fn;

void lmkh_set_interrupt_handler(mkh_interrupt_fn fn) { interrupt_fn = fn; }

/* Called after any wait that may have been cut short by a signal. */
void lmkh_check_interrupt(lua_State *L)
{
    int sig = mkh_interrupted();
    if (sig && interrupt_fn) interrupt_fn(L, sig);
}

int lmkh_push_fail(lua_State *L, const char *msg)
{
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

int lmkh_push_errno(lua_State *L, const char *what)
{
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", what, strerror(errno));
    return 2;
}

/* The most elements a list from Lua may have: far more than execve takes
 * (all strings share ARG_MAX, 2 MB by default) or poll needs, and small
 * enough that a vector's size cannot overflow. */
#define LIST_MAX (1 << 20)

/* #t for a list argument, refused (argument `arg`) outside [min, LIST_MAX]:
 * a __len may return anything. */
lua_Integer lmkh_list_len(lua_State *L, int idx, int arg, const char *what, lua_Integer min)
{
    lua_Integer n = luaL_len(L, idx);
    if (n < min || n > LIST_MAX)
        luaL_argerror(L, arg, lua_pushfstring(L, "%s has length %I (must be %I to %d)", what, n, min, LIST_MAX));
    return n;
}

/* Seconds to a poll() timeout in ms: negative waits for ever, NaN not at
 * all, and more than an int holds is capped (callers loop and re-check). */
int lmkh_poll_ms(double s)
{
    if (s != s) return 0;
    if (s < 0) return -1;
    if (s > 86400.0) return 86400 * 1000;
    return (int)(s * 1000.0 + 0.999);
}

void lmkh_new_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc)
{
    luaL_newmetatable(L, name);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    if (gc) {
        lua_pushcfunction(L, gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, gc);
        lua_setfield(L, -2, "__close");
    }
    lua_pop(L, 1);
}

/* Teardown at process exit for hosts we do not control (stock lua, busted):
 * registered once; glibc runs it at exit() or at dlclose of this module. */
static void at_exit(void)
{
    mkh_teardown(0);
    mkh_echo_shutdown(); /* what the services printed last, then join */
}

int luaopen_mkharness_core(lua_State *L)
{
    static int registered;
    mkh_supervise_init();
    if (!registered) {
        registered = 1;
        atexit(at_exit);
    }
    lua_newtable(L);
    lua_pushstring(L, MKH_VERSION);
    lua_setfield(L, -2, "version");
    lmkh_open_proc(L);
    lmkh_open_watch(L);
    lmkh_open_scanner(L);
    lmkh_open_dgram(L);
    lmkh_open_echo(L);
    lmkh_open_spawning(L);
    lmkh_open_run(L);
    lmkh_open_text(L);
    lmkh_open_net(L);
    lmkh_open_file(L);
    lmkh_open_http(L);
    lmkh_open_proxy(L);
    lmkh_open_lab(L);
    lmkh_open_tcp(L);
    return 1;
}
