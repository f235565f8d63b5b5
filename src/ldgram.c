/* mkharness.dgram: the notify probe's datagram socket. */
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


/* A bound AF_UNIX datagram socket: the NOTIFY_SOCKET of the notify probe. */
typedef struct { int fd; char path[108]; } ldgram;

static ldgram *check_dgram(lua_State *L, int i)
{
    ldgram *d = (ldgram *)luaL_checkudata(L, i, DGRAM_MT);
    if (d->fd < 0) luaL_error(L, "socket is closed");
    return d;
}

static int l_dgram(lua_State *L)
{
    size_t len;
    const char *path = luaL_checklstring(L, 1, &len);
    ldgram *d = lua_newuserdatauv(L, sizeof *d, 0);
    d->fd = -1;
    luaL_setmetatable(L, DGRAM_MT);
    if (len >= sizeof d->path) return lmkh_push_fail(L, "notify socket path too long");
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, len + 1);
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return lmkh_push_errno(L, "socket");
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return lmkh_push_errno(L, path);
    }
    d->fd = fd;
    memcpy(d->path, path, len + 1);
    return 1;
}

static int l_dgram_fd(lua_State *L)
{
    lua_pushinteger(L, check_dgram(L, 1)->fd);
    return 1;
}

/* d:recv() -> the next datagram, or nil when none is waiting */
static int l_dgram_recv(lua_State *L)
{
    ldgram *d = check_dgram(L, 1);
    char buf[4096];
    ssize_t n = recv(d->fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0) return 0;
    lua_pushlstring(L, buf, (size_t)n);
    return 1;
}

static int l_dgram_close(lua_State *L)
{
    ldgram *d = (ldgram *)luaL_checkudata(L, 1, DGRAM_MT);
    if (d->fd >= 0) {
        close(d->fd);
        unlink(d->path);
    }
    d->fd = -1;
    return 0;
}


static const luaL_Reg dgram_methods[] = {
    {"fd", l_dgram_fd}, {"recv", l_dgram_recv}, {"close", l_dgram_close}, {NULL, NULL}
};

void lmkh_open_dgram(lua_State *L)
{
    lmkh_new_class(L, DGRAM_MT, dgram_methods, l_dgram_close);
    static const luaL_Reg funcs[] = {
        {"dgram", l_dgram},
        {NULL, NULL}
    };
    luaL_setfuncs(L, funcs, 0);
}
