/* mkharness.watch: inotify watches on the run's one inotify instance. */
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


/* One inotify instance for the whole run. Closing an inotify fd that holds
 * watches waits for an RCU grace period (measured 5-15 ms), which would sit
 * between "ready" and start() returning; removing a watch does not wait.
 * Watches on the same inode share a descriptor, hence the reference counts.
 * Every event only wakes the wait loop: probes then re-check their state, so
 * whoever drains the queue, nobody misses anything. */
static int ino_fd = -1;
static struct { int wd, refs; } *wds;
static size_t nwds, capwds;

static int inotify_shared(void)
{
    if (ino_fd < 0) ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    return ino_fd;
}

static void wd_ref(int wd)
{
    for (size_t i = 0; i < nwds; i++)
        if (wds[i].wd == wd) { wds[i].refs++; return; }
    void *arr = wds;
    if (mkh_grow(&arr, &capwds, nwds + 1, sizeof *wds) != 0) return;
    wds = arr;
    wds[nwds].wd = wd;
    wds[nwds].refs = 1;
    nwds++;
}

static void wd_unref(int wd)
{
    for (size_t i = 0; i < nwds; i++) {
        if (wds[i].wd != wd) continue;
        if (--wds[i].refs == 0) {
            inotify_rm_watch(ino_fd, wd);
            wds[i] = wds[--nwds];
        }
        return;
    }
}

#define WATCH_MAX 4
typedef struct { int open; int n; int wd[WATCH_MAX]; } lwatch;

static lwatch *check_watch(lua_State *L, int i)
{
    lwatch *w = (lwatch *)luaL_checkudata(L, i, WATCH_MT);
    if (!w->open) luaL_error(L, "watch is closed");
    return w;
}

static int l_watch(lua_State *L)
{
    if (inotify_shared() < 0) return lmkh_push_errno(L, "inotify_init1");
    lwatch *w = lua_newuserdatauv(L, sizeof *w, 0);
    memset(w, 0, sizeof *w);
    w->open = 1;
    luaL_setmetatable(L, WATCH_MT);
    return 1;
}

/* w:add(path, "modify" | "create") -> watch descriptor */
static int l_watch_add(lua_State *L)
{
    lwatch *w = check_watch(L, 1);
    const char *path = luaL_checkstring(L, 2);
    const char *what = luaL_checkstring(L, 3);
    if (w->n == WATCH_MAX) return luaL_error(L, "too many paths in one watch");
    uint32_t mask = !strcmp(what, "create")
        ? IN_CREATE | IN_MOVED_TO | IN_ATTRIB | IN_CLOSE_WRITE
        : IN_MODIFY;
    int wd = inotify_add_watch(ino_fd, path, mask | IN_MASK_ADD);
    if (wd < 0) return lmkh_push_errno(L, path);
    wd_ref(wd);
    w->wd[w->n++] = wd;
    lua_pushinteger(L, wd);
    return 1;
}

static int l_watch_fd(lua_State *L)
{
    check_watch(L, 1);
    lua_pushinteger(L, ino_fd);
    return 1;
}

/* w:drain() -> number of events read (they only wake us up) */
static int l_watch_drain(lua_State *L)
{
    check_watch(L, 1);
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    lua_Integer events = 0;
    for (;;) {
        ssize_t n = read(ino_fd, buf, sizeof buf);
        if (n <= 0) break;
        for (char *p = buf; p < buf + n; ) {
            struct inotify_event *e = (struct inotify_event *)p;
            events++;
            p += sizeof *e + e->len;
        }
    }
    lua_pushinteger(L, events);
    return 1;
}

static int l_watch_close(lua_State *L)
{
    lwatch *w = (lwatch *)luaL_checkudata(L, 1, WATCH_MT);
    if (w->open) {
        for (int i = 0; i < w->n; i++) wd_unref(w->wd[i]);
        w->n = 0;
        w->open = 0;
    }
    return 0;
}


static const luaL_Reg watch_methods[] = {
    {"add", l_watch_add}, {"fd", l_watch_fd}, {"drain", l_watch_drain},
    {"close", l_watch_close}, {NULL, NULL}
};

void lmkh_open_watch(lua_State *L)
{
    inotify_shared(); /* a permanent fd from the start, not a leak later */
    lmkh_new_class(L, WATCH_MT, watch_methods, l_watch_close);
    static const luaL_Reg funcs[] = {
        {"watch", l_watch},
        {NULL, NULL}
    };
    luaL_setfuncs(L, funcs, 0);
}
