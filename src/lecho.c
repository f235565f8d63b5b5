/* mkharness.echo: a service stream copied live by the echo thread (echo.c). */
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


/* core.echo(path, name, is_stderr) -> a capture file echoed live by the echo
 * thread (echo.c), or nil, err. e:flush() echoes every complete line before
 * it returns; e:close() (also __gc) all of it and stops. */
static int l_echo(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    const char *name = luaL_checkstring(L, 2);
    int is_err = lua_toboolean(L, 3);
    mkh_echo *e = lua_newuserdatauv(L, sizeof *e, 0);
    memset(e, 0, sizeof *e); /* closed until open: __gc does nothing */
    luaL_setmetatable(L, ECHO_MT);
    char err[512];
    if (mkh_echo_open(e, path, name, is_err, err, sizeof err) != 0) return lmkh_push_fail(L, err);
    return 1;
}

static int l_echo_flush(lua_State *L)
{
    mkh_echo_flush((mkh_echo *)luaL_checkudata(L, 1, ECHO_MT));
    return 0;
}

static int l_echo_close(lua_State *L)
{
    mkh_echo_close((mkh_echo *)luaL_checkudata(L, 1, ECHO_MT));
    return 0;
}

/* core.echo_setup(color, stamps, t0): how lines look, for every stream */
static int l_echo_setup(lua_State *L)
{
    mkh_echo_setup(lua_toboolean(L, 1), lua_toboolean(L, 2), luaL_optnumber(L, 3, mkh_now()));
    return 0;
}

static int l_echo_flush_all(lua_State *L)
{
    (void)L;
    mkh_echo_flush_all();
    return 0;
}

static int l_echo_shutdown(lua_State *L)
{
    (void)L;
    mkh_echo_shutdown();
    return 0;
}


static const luaL_Reg echo_methods[] = {
    {"flush", l_echo_flush}, {"close", l_echo_close}, {NULL, NULL}
};

void lmkh_open_echo(lua_State *L)
{
    lmkh_new_class(L, ECHO_MT, echo_methods, l_echo_close);
    static const luaL_Reg funcs[] = {
        {"echo", l_echo},
        {"echo_setup", l_echo_setup},
        {"echo_flush_all", l_echo_flush_all},
        {"echo_shutdown", l_echo_shutdown},
        {NULL, NULL}
    };
    luaL_setfuncs(L, funcs, 0);
}
