/* The run: waiting (poll, sleep, now), its id and directory, teardown,
 * its children, leftovers and fds (for the specs). */
#define _GNU_SOURCE
#include "lmkh.h"
#include "mkh.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
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
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

extern char **environ;


/* core.poll(fds, timeout) -> set of ready fds (possibly empty).
 * Returns early when the harness is interrupted. */
static int l_poll(lua_State *L)
{
    mkh_reap_strays(); /* every wait is a chance to wait for strays */
    lua_Integer len = lua_isnoneornil(L, 1) ? 0 : (luaL_checktype(L, 1, LUA_TTABLE), lmkh_list_len(L, 1, 1, "fds", 0));
    struct pollfd *pf = lua_newuserdatauv(L, (size_t)(len + 1) * sizeof *pf, 0);
    int n = 0;
    for (lua_Integer i = 1; i <= len; i++) {
        lua_geti(L, 1, i);
        pf[n].fd = (int)luaL_checkinteger(L, -1);
        pf[n].events = POLLIN;
        pf[n].revents = 0;
        n++;
        lua_pop(L, 1);
    }
    int ifd = mkh_interrupt_fd();
    if (ifd >= 0) {
        pf[n].fd = ifd;
        pf[n].events = POLLIN;
        pf[n].revents = 0;
        n++;
    }
    /* ppoll: a wait of 0.3 ms is 0.3 ms, not a whole millisecond (chaos
     * faults are due to the sub-millisecond) */
    double s = luaL_optnumber(L, 2, -1);
    if (s != s) s = 0; /* NaN: no wait at all, never for ever; negative: no limit */
    struct timespec ts, *tp = NULL;
    if (s >= 0) {
        if (s > 86400.0) s = 86400.0;
        ts.tv_sec = (time_t)s;
        ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
        tp = &ts;
    }
    int r = ppoll(pf, (nfds_t)n, tp, NULL);
    mkh_exit_fd_drain(); /* the SIGCHLD pipe only wakes; everyone re-checks */
    lmkh_check_interrupt(L);
    lua_createtable(L, 0, 4);
    for (int i = 0; r > 0 && i < n; i++) {
        if (pf[i].revents && pf[i].fd != ifd) {
            lua_pushboolean(L, 1);
            lua_rawseti(L, -2, pf[i].fd);
        }
    }
    return 1;
}

/* core.readable(fds) -> set of those fds readable now (poll, no wait, no
 * other side effect) */
static int l_readable(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer len = lmkh_list_len(L, 1, 1, "fds", 0);
    struct pollfd *pf = lua_newuserdatauv(L, (size_t)(len + 1) * sizeof *pf, 0);
    for (lua_Integer i = 0; i < len; i++) {
        lua_geti(L, 1, i + 1);
        pf[i].fd = (int)luaL_checkinteger(L, -1);
        pf[i].events = POLLIN;
        pf[i].revents = 0;
        lua_pop(L, 1);
    }
    int r;
    do r = poll(pf, (nfds_t)len, 0); while (r < 0 && errno == EINTR);
    lua_createtable(L, 0, r > 0 ? r : 0);
    for (lua_Integer i = 0; r > 0 && i < len; i++) {
        if (pf[i].revents) {
            lua_pushboolean(L, 1);
            lua_rawseti(L, -2, pf[i].fd);
        }
    }
    return 1;
}

static int l_sleep(lua_State *L)
{
    double deadline = mkh_now() + luaL_checknumber(L, 1);
    mkh_reap_strays();
    int ifd = mkh_interrupt_fd();
    for (;;) {
        double left = deadline - mkh_now();
        if (!(left > 0)) break; /* NaN too */
        struct pollfd pf = { ifd, POLLIN, 0 };
        poll(&pf, ifd >= 0 ? 1 : 0, lmkh_poll_ms(left));
        lmkh_check_interrupt(L);
    }
    return 0;
}

static int l_now(lua_State *L)
{
    lua_pushnumber(L, mkh_now());
    return 1;
}

/* core.cputime(): seconds of CPU the calling thread has used, user and
 * kernel mode: what the wait loop paces its polling by. The thread, not
 * the process: a proxy forwarding at full speed, or the echo thread
 * copying a flood, is not the loop's cost and must not stall its probes. */
static int l_cputime(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    lua_pushnumber(L, (double)ts.tv_sec + (double)ts.tv_nsec / 1e9);
    return 1;
}


static int l_environ(lua_State *L)
{
    lua_newtable(L);
    int i = 1;
    for (char **e = environ; e && *e; e++) {
        lua_pushstring(L, *e);
        lua_rawseti(L, -2, i++);
    }
    return 1;
}


static int l_run_id(lua_State *L)
{
    lua_pushstring(L, mkh_run_id());
    return 1;
}


/* core.run_dir([keep]) -> path (created on first use), keep flag;
 * core.run_dir(nil, true) only tells, without creating: path or nil */
static int l_run_dir(lua_State *L)
{
    char err[512];
    if (lua_toboolean(L, 2)) {
        const char *made = mkh_run_dir_if_made();
        if (!made) return 0;
        lua_pushstring(L, made);
        return 1;
    }
    if (lua_isboolean(L, 1)) mkh_set_run_dir_keep(lua_toboolean(L, 1));
    const char *d = mkh_run_dir(err, sizeof err);
    if (!d) return lmkh_push_fail(L, err);
    lua_pushstring(L, d);
    lua_pushboolean(L, mkh_run_dir_keep());
    return 2;
}


static int l_keep(lua_State *L)
{
    mkh_set_run_dir_keep(lua_toboolean(L, 1));
    return 0;
}


static int l_teardown(lua_State *L)
{
    mkh_teardown(lua_toboolean(L, 1));
    return 0;
}


/* core.leftovers() -> list of pids the run started that nothing owns */
static int l_leftovers(lua_State *L)
{
    pid_t pids[256];
    size_t n = mkh_leftovers(pids, 256);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushinteger(L, pids[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}


/* core.fds() -> sorted list of this process's open fds, { fd = target } */
static int l_fds(lua_State *L)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d) return lmkh_push_errno(L, "/proc/self/fd");
    int self = dirfd(d);
    lua_newtable(L);
    lua_newtable(L);
    lua_Integer n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        int fd = atoi(e->d_name);
        if (fd == self) continue;
        char link[300], target[512];
        snprintf(link, sizeof link, "/proc/self/fd/%s", e->d_name);
        ssize_t len = readlink(link, target, sizeof target - 1);
        target[len > 0 ? len : 0] = '\0';
        lua_pushstring(L, target);
        lua_rawseti(L, -2, fd);
        lua_pushinteger(L, fd);
        lua_rawseti(L, -3, ++n);
    }
    closedir(d);
    lua_getglobal(L, "table");
    lua_getfield(L, -1, "sort");
    lua_pushvalue(L, -4);
    lua_call(L, 1, 0);
    lua_pop(L, 1);
    return 2;
}


/* core.children() -> list of this process's children */
static int l_children(lua_State *L)
{
    char path[64], buf[16384];
    snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)getpid());
    lua_newtable(L);
    if (mkh_read_small(path, buf, sizeof buf) <= 0) return 1;
    lua_Integer n = 0;
    for (char *s = buf; *s; ) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s) break;
        s = end;
        lua_pushinteger(L, v);
        lua_rawseti(L, -2, ++n);
    }
    return 1;
}


/* core.own_child(pid): a child the process forked itself (popen), which
 * its own code will wait for: never reaped as a stray */
static int l_own_child(lua_State *L)
{
    mkh_own_child((pid_t)luaL_checkinteger(L, 1), 1);
    return 0;
}


static int l_interrupted(lua_State *L)
{
    lua_pushinteger(L, mkh_interrupted());
    return 1;
}

/* core.resume(co, ...) -> coroutine.resume(co, ...), telling the host's
 * hook thread which coroutine runs. A count hook makes every VM
 * instruction take a slower path; coroutines get one at creation, as the
 * hook thread cannot know which one runs when a signal comes. A chaos
 * client's coroutine runs without it, resumed through here, and is hooked
 * by the thread, as the main thread is. The mutex keeps the coroutine
 * from ending while the thread hooks it. */
static pthread_mutex_t resumed_mu = PTHREAD_MUTEX_INITIALIZER;
static lua_State *resumed;

void lmkh_with_resumed(void (*fn)(lua_State *co))
{
    pthread_mutex_lock(&resumed_mu);
    if (resumed) fn(resumed);
    pthread_mutex_unlock(&resumed_mu);
}

static void set_resumed(lua_State *co)
{
    pthread_mutex_lock(&resumed_mu);
    resumed = co;
    pthread_mutex_unlock(&resumed_mu);
}

static int l_resume(lua_State *L)
{
    lua_State *co = lua_tothread(L, 1);
    luaL_argexpected(L, co, 1, "coroutine");
    int narg = lua_gettop(L) - 1;
    int status = lua_status(co);
    if (status == LUA_OK && lua_gettop(co) == 0) {
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "cannot resume dead coroutine");
        return 2;
    }
    if ((status != LUA_OK && status != LUA_YIELD) || co == L) {
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "cannot resume non-suspended coroutine");
        return 2;
    }
    if (!lua_checkstack(co, narg)) {
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "too many arguments to resume");
        return 2;
    }
    lua_xmove(L, co, narg);
    lua_State *outer = resumed;
    set_resumed(co);
    int nres;
    status = lua_resume(co, L, narg, &nres);
    set_resumed(outer);
    if (status == LUA_OK || status == LUA_YIELD) {
        if (!lua_checkstack(L, nres + 1)) {
            lua_pop(co, nres);
            lua_pushboolean(L, 0);
            lua_pushliteral(L, "too many results to resume");
            return 2;
        }
        lua_pushboolean(L, 1);
        lua_xmove(co, L, nres);
        return nres + 1;
    }
    lua_pushboolean(L, 0);
    lua_xmove(co, L, 1); /* the error */
    return 2;
}

/* core.isatty(fd) -> boolean (the report colours a terminal only) */
static int l_isatty(lua_State *L)
{
    lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
    return 1;
}


void lmkh_open_run(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"poll", l_poll},
        {"readable", l_readable},
        {"sleep", l_sleep},
        {"now", l_now},
        {"cputime", l_cputime},
        {"environ", l_environ},
        {"run_id", l_run_id},
        {"run_dir", l_run_dir},
        {"keep", l_keep},
        {"teardown", l_teardown},
        {"interrupted", l_interrupted},
        {"resume", l_resume},
        {"isatty", l_isatty},
        {"leftovers", l_leftovers},
        {"fds", l_fds},
        {"children", l_children},
        {"own_child", l_own_child},
        {NULL, NULL}
    };
    luaL_setfuncs(L, funcs, 0);
}
