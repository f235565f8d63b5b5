/* The lab's Lua binding: core.lab(names, hosts_file) -> a userdata around
 * lab.c's keeper. Names arrive validated by lua/mkharness/lab.lua; OS
 * failures come back as nil, message, kind ("userns" when user namespaces
 * are not allowed here). Host indexes are 1-based; 0 is the control node. */
#define _GNU_SOURCE
#include "lmkh.h"
#include "mkh.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

typedef struct { mkh_lab *lab; } llab;

mkh_lab *lmkh_check_lab(lua_State *L, int i)
{
    llab *l = (llab *)luaL_checkudata(L, i, LMKH_LAB_MT);
    if (!l->lab) luaL_error(L, "the lab is closed");
    return l->lab;
}

/* argument i: 0 (the control node) to the number of hosts; -> 0-based, -1 */
static int check_host(lua_State *L, mkh_lab *lab, int i)
{
    lua_Integer h = luaL_checkinteger(L, i);
    luaL_argcheck(L, h >= 0 && h <= mkh_lab_hosts(lab), i, "no such host");
    return (int)h - 1;
}

static int l_lab(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    const char *hosts_file = luaL_checkstring(L, 2);
    lua_Integer n = lmkh_list_len(L, 1, 1, "names", 1);
    luaL_argcheck(L, n <= MKH_LAB_HOSTS_MAX, 1, "too many hosts");
    const char **names = lua_newuserdatauv(L, (size_t)n * sizeof *names, 0);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i);
        size_t len;
        names[i - 1] = lua_tolstring(L, -1, &len);
        luaL_argcheck(L, names[i - 1] && len > 0 && len <= MKH_LAB_NAME_MAX, 1, "bad host name");
        lua_pop(L, 1); /* the table keeps the string alive */
    }
    llab *l = lua_newuserdatauv(L, sizeof *l, 0);
    l->lab = NULL;
    luaL_setmetatable(L, LMKH_LAB_MT);
    char err[1024];
    l->lab = mkh_lab_new(names, (int)n, hosts_file, err, sizeof err);
    if (!l->lab) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        lua_pushstring(L, strstr(err, "user namespaces") ? "userns" : "os");
        return 3;
    }
    return 1;
}

/* lab:addr(host) -> "198.18.k.x" */
static int l_addr(lua_State *L)
{
    mkh_lab *lab = lmkh_check_lab(L, 1);
    int h = check_host(L, lab, 2);
    struct in_addr a = { htonl(mkh_lab_addr(lab, h)) };
    char txt[INET_ADDRSTRLEN];
    lua_pushstring(L, inet_ntop(AF_INET, &a, txt, sizeof txt));
    return 1;
}

/* lab:filter{ [host] = nft_script, ... } -> true | nil, err: every host's
 * rules in one request */
static int l_filter(lua_State *L)
{
    mkh_lab *lab = lmkh_check_lab(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int nh = mkh_lab_hosts(lab), n = 0;
    int *hosts = lua_newuserdatauv(L, (size_t)nh * sizeof *hosts, 0);
    const char **scripts = lua_newuserdatauv(L, (size_t)nh * sizeof *scripts, 0);
    for (int h = 1; h <= nh; h++) {
        if (lua_geti(L, 2, h) == LUA_TNIL) { lua_pop(L, 1); continue; }
        scripts[n] = lua_tostring(L, -1);
        luaL_argcheck(L, scripts[n] != NULL, 2, "scripts must be strings");
        hosts[n++] = h - 1;
        lua_pop(L, 1); /* the table keeps the string alive */
    }
    char err[1024];
    if (n > 0 && mkh_lab_filter(lab, n, hosts, scripts, err, sizeof err) != 0) return lmkh_push_fail(L, err);
    lua_pushboolean(L, 1);
    return 1;
}

/* lab:netem(host, delay_ms, jitter_ms, loss_percent) -> true | nil, err */
static int l_netem(lua_State *L)
{
    mkh_lab *lab = lmkh_check_lab(L, 1);
    int h = check_host(L, lab, 2);
    luaL_argcheck(L, h >= 0, 2, "the control node has no netem");
    double d = luaL_checknumber(L, 3), j = luaL_checknumber(L, 4), loss = luaL_checknumber(L, 5);
    luaL_argcheck(L, d >= 0 && d <= 3600e3, 3, "delay out of range");
    luaL_argcheck(L, j >= 0 && j <= 3600e3, 4, "jitter out of range");
    luaL_argcheck(L, loss >= 0 && loss <= 100, 5, "loss out of range");
    char err[1024];
    if (mkh_lab_netem(lab, h, d, j, loss, err, sizeof err) != 0) return lmkh_push_fail(L, err);
    lua_pushboolean(L, 1);
    return 1;
}

/* lab:keeper() -> pid, user namespace inode (what a leak check looks for) */
static int l_keeper(lua_State *L)
{
    mkh_lab *lab = lmkh_check_lab(L, 1);
    lua_pushinteger(L, mkh_lab_keeper(lab));
    lua_pushinteger(L, (lua_Integer)mkh_lab_user_ino(lab));
    return 2;
}

static int l_close(lua_State *L)
{
    llab *l = (llab *)luaL_checkudata(L, 1, LMKH_LAB_MT);
    mkh_lab_close(l->lab);
    l->lab = NULL;
    return 0;
}

static const luaL_Reg methods[] = {
    {"addr", l_addr}, {"filter", l_filter}, {"netem", l_netem}, {"keeper", l_keeper},
    {"close", l_close}, {NULL, NULL}
};

void lmkh_open_lab(lua_State *L)
{
    lmkh_new_class(L, LMKH_LAB_MT, methods, l_close);
    lua_pushcfunction(L, l_lab);
    lua_setfield(L, -2, "lab");
}
