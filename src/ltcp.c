/* A TCP connection attempt the wait loop drives: core.tcp_start(host, port,
 * resolve_timeout, keep) -> true (connected at once; with keep, an attempt
 * whose take() hands the socket over) | false, err (refused at once) | an
 * attempt | nil, err (no address, no socket).
 * The attempt's fd() is an epoll descriptor holding the connecting socket
 * for output, so that it reads as ready (core.poll waits for input only)
 * when the connect has finished either way; result() then says how. A
 * connect that is slow (a lab partition dropping the SYN, a loaded
 * machine) so no longer holds every other waiter and due timer. */
#define _GNU_SOURCE
#include "lmkh.h"
#include "mkh.h"

#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#define TCP_MT "mkharness.tcp_attempt"

typedef struct {
    int sock, ep;
    char what[300];   /* "connect to host:port" */
} tcp_attempt;

static tcp_attempt *check_tcp(lua_State *L, int i)
{
    return (tcp_attempt *)luaL_checkudata(L, i, TCP_MT);
}

static void attempt_close(tcp_attempt *a)
{
    if (a->sock >= 0) close(a->sock);
    if (a->ep >= 0) close(a->ep);
    a->sock = a->ep = -1;
}

/* the attempt object; its socket connected (ep < 0) or connecting */
static tcp_attempt *new_attempt(lua_State *L, int fd, const char *host, int port)
{
    tcp_attempt *a = lua_newuserdatauv(L, sizeof *a, 0);
    a->sock = fd;
    a->ep = -1;
    snprintf(a->what, sizeof a->what, "connect to %s:%d", host, port);
    luaL_setmetatable(L, TCP_MT);
    return a;
}

static int l_tcp_start(lua_State *L)
{
    const char *host = luaL_checkstring(L, 1);
    int port = (int)luaL_checkinteger(L, 2);
    double timeout = luaL_optnumber(L, 3, 1.0);
    int keep = lua_toboolean(L, 4); /* a connected socket is kept: attempt:take() */
    luaL_argcheck(L, port >= 1 && port <= 65535, 2, "port must be 1 to 65535");
    luaL_argcheck(L, timeout == timeout, 3, "timeout is NaN");
    char err[512];
    int fd;
    int r = mkh_tcp_connect_start(host, port, timeout, &fd, err, sizeof err);
    if (r < 0) return lmkh_push_fail(L, err);
    /* on loopback the answer (a SYN-ACK or a reset) is usually in before
     * connect() returns EINPROGRESS: take it now, saving an epoll
     * descriptor and a pass of the wait loop per attempt */
    if (r == 1) r = mkh_tcp_connect_result(fd, err, sizeof err);
    if (r == 0 && keep) {
        new_attempt(L, fd, host, port); /* connected: result() says so, take() hands it over */
        return 1;
    }
    if (r != 1) {
        close(fd);
        if (r == 0) {
            lua_pushboolean(L, 1);
            return 1;
        }
        lua_pushboolean(L, 0);
        lua_pushfstring(L, "connect to %s:%d: %s", host, port, err);
        return 2;
    }
    tcp_attempt *a = new_attempt(L, fd, host, port);
    a->ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLOUT };
    ev.data.fd = fd;
    if (a->ep < 0 || epoll_ctl(a->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        attempt_close(a);
        return lmkh_push_errno(L, "epoll");
    }
    return 1;
}

/* attempt:result() -> nil (in progress) | true | false, err */
static int l_result(lua_State *L)
{
    tcp_attempt *a = check_tcp(L, 1);
    if (a->sock < 0) return luaL_error(L, "tcp attempt: result after close");
    char err[256];
    int r = mkh_tcp_connect_result(a->sock, err, sizeof err);
    if (r == 1) return 0;
    if (r == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushboolean(L, 0);
    lua_pushfstring(L, "%s: %s", a->what, err);
    return 2;
}

/* attempt:take() -> the connected socket's fd, now the caller's (nil if
 * the connect has not succeeded or it was taken) */
static int l_take(lua_State *L)
{
    tcp_attempt *a = check_tcp(L, 1);
    char err[256];
    if (a->sock < 0 || mkh_tcp_connect_result(a->sock, err, sizeof err) != 0) return 0;
    lua_pushinteger(L, a->sock);
    a->sock = -1;
    attempt_close(a);
    return 1;
}

static int l_fd(lua_State *L)
{
    tcp_attempt *a = check_tcp(L, 1);
    if (a->ep < 0) return 0;
    lua_pushinteger(L, a->ep);
    return 1;
}

static int l_close(lua_State *L)
{
    attempt_close(check_tcp(L, 1));
    return 0;
}

static const luaL_Reg methods[] = {
    {"result", l_result}, {"fd", l_fd}, {"take", l_take}, {"close", l_close}, {NULL, NULL}
};

void lmkh_open_tcp(lua_State *L)
{
    lmkh_new_class(L, TCP_MT, methods, l_close);
    lua_pushcfunction(L, l_tcp_start);
    lua_setfield(L, -2, "tcp_start");
}
