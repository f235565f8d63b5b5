/* mkharness.spawning: a process being started with its launch (the clone
 * and the wait for its exec) on the spawn thread (core.spawn_start, see
 * spawn.c). s:fd() is readable and s:done() true once the launch is over;
 * s:take() then gives the proc, or nil and the message core.spawn would
 * have given. Given up instead (s:close(), __close, __gc): a launch not
 * begun never runs, a child already started is killed with its
 * descendants. */
#define _GNU_SOURCE
#include "lmkh.h"
#include "mkh.h"

#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

typedef struct {
    mkh_launch *l;       /* NULL once taken or given up */
    char token[128];     /* MKHARNESS_SERVICE=... for the sweep of a child given up */
} lspawning;

static lspawning *check_spawning(lua_State *L, int i)
{
    return (lspawning *)luaL_checkudata(L, i, SPAWNING_MT);
}

mkh_launch **lmkh_new_spawning(lua_State *L, const char *token)
{
    lspawning *s = lua_newuserdatauv(L, sizeof *s, 0);
    s->l = NULL;
    snprintf(s->token, sizeof s->token, "%s", token ? token : "");
    luaL_setmetatable(L, SPAWNING_MT);
    return &s->l;
}

/* s:fd() -> the eventfd to wait on, nil once taken */
static int l_spawning_fd(lua_State *L)
{
    lspawning *s = check_spawning(L, 1);
    if (!s->l) return 0;
    lua_pushinteger(L, mkh_launch_fd(s->l));
    return 1;
}

/* s:done() -> true once s:take() will not wait */
static int l_spawning_done(lua_State *L)
{
    lspawning *s = check_spawning(L, 1);
    lua_pushboolean(L, !s->l || mkh_launch_done(s->l));
    return 1;
}

/* s:take() -> proc, or nil, message (waits for the launch if need be) */
static int l_spawning_take(lua_State *L)
{
    lspawning *s = check_spawning(L, 1);
    if (!s->l) return lmkh_push_fail(L, "spawn already taken or given up");
    mkh_proc *p = lmkh_new_proc(L, s->token); /* may raise: s still holds the launch */
    mkh_launch *l = s->l;
    s->l = NULL;
    char err[1024];
    if (mkh_launch_finish(l, p, err, sizeof err) != 0) return lmkh_push_fail(L, err);
    return 1;
}

/* s:close(), also __close and __gc */
static int l_spawning_close(lua_State *L)
{
    lspawning *s = check_spawning(L, 1);
    mkh_launch *l = s->l;
    s->l = NULL;
    if (l) mkh_launch_abandon(l, s->token);
    return 0;
}

static const luaL_Reg spawning_methods[] = {
    {"fd", l_spawning_fd}, {"done", l_spawning_done}, {"take", l_spawning_take}, {"close", l_spawning_close},
    {NULL, NULL}
};

void lmkh_open_spawning(lua_State *L)
{
    lmkh_new_class(L, SPAWNING_MT, spawning_methods, l_spawning_close);
}
