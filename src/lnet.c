/* Sockets: free ports, the tcp and unix probes, who holds a port. */
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

static int l_free_port(lua_State *L)
{
    char err[256];
    int p = mkh_free_port(err, sizeof err);
    if (p < 0) return lmkh_push_fail(L, err);
    lua_pushinteger(L, p);
    return 1;
}


static int l_tcp_probe(lua_State *L)
{
    char err[512];
    const char *host = luaL_checkstring(L, 1);
    int port = (int)luaL_checkinteger(L, 2);
    double timeout = luaL_optnumber(L, 3, 1.0);
    if (mkh_tcp_probe(host, port, timeout, err, sizeof err) != 0) return lmkh_push_fail(L, err);
    lua_pushboolean(L, 1);
    return 1;
}


static int l_unix_probe(lua_State *L)
{
    char err[512];
    if (mkh_unix_probe(luaL_checkstring(L, 1), err, sizeof err) != 0) return lmkh_push_fail(L, err);
    lua_pushboolean(L, 1);
    return 1;
}


static int l_port_owner(lua_State *L)
{
    char cmd[512];
    pid_t pid = mkh_port_owner((int)luaL_checkinteger(L, 1), cmd, sizeof cmd);
    if (!pid) return 0;
    lua_pushinteger(L, pid);
    lua_pushstring(L, cmd);
    return 2;
}

void lmkh_open_net(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"free_port", l_free_port},
        {"tcp_probe", l_tcp_probe},
        {"unix_probe", l_unix_probe},
        {"port_owner", l_port_owner},
        {NULL, NULL}
    };
    luaL_setfuncs(L, funcs, 0);
}
