/* mkharness.core: the Lua binding of the engine. Functions here convert
 * arguments and call the engine; the friendly API, option checking and
 * composition live in lua/mkharness/init.lua. Errors from the OS come back as
 * nil, message; the Lua layer turns them into harness errors. */
#define _GNU_SOURCE
#include "lmkh.h"
#include "mkh.h"

#include <dirent.h>
#include <limits.h>
#include <errno.h>
#include <fcntl.h>
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

#define PROC_MT "mkharness.proc"
#define WATCH_MT "mkharness.watch"
#define SCANNER_MT "mkharness.scanner"
#define DGRAM_MT "mkharness.dgram"
#define ECHO_MT "mkharness.echo"

extern char **environ;

static mkh_interrupt_fn interrupt_fn;

void lmkh_set_interrupt_handler(mkh_interrupt_fn fn) { interrupt_fn = fn; }

/* Called after any wait that may have been cut short by a signal. */
static void check_interrupt(lua_State *L)
{
    int sig = mkh_interrupted();
    if (sig && interrupt_fn) interrupt_fn(L, sig);
}

static int push_fail(lua_State *L, const char *msg)
{
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

static int push_errno(lua_State *L, const char *what)
{
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", what, strerror(errno));
    return 2;
}

/* ------------------------------------------------------------------ proc */

typedef struct {
    mkh_proc p;
    char token[128];    /* MKHARNESS_SERVICE=... for the sweep */
} lproc;

static lproc *check_proc(lua_State *L, int i)
{
    return (lproc *)luaL_checkudata(L, i, PROC_MT);
}

static int exit_code(int status)
{
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return -WTERMSIG(status);
    return 0;
}

/* The most elements a list from Lua may have: far more than execve takes
 * (all strings share ARG_MAX, 2 MB by default) or poll needs, and small
 * enough that a vector's size cannot overflow. */
#define LIST_MAX (1 << 20)

/* #t for a list argument, refused (argument `arg`) outside [min, LIST_MAX]:
 * a __len may return anything. */
static lua_Integer list_len(lua_State *L, int idx, int arg, const char *what, lua_Integer min)
{
    lua_Integer n = luaL_len(L, idx);
    if (n < min || n > LIST_MAX)
        luaL_argerror(L, arg, lua_pushfstring(L, "%s has length %I (must be %I to %d)", what, n, min, LIST_MAX));
    return n;
}

/* Array of strings at t[key] as a NULL-terminated vector allocated in a
 * userdata kept on the stack; at least `min` elements. Elements are read
 * raw and must be strings: only then does the table keep them alive (a
 * converted number or an __index result would be collected under us). */
static char **string_vector(lua_State *L, int t, const char *key, lua_Integer min)
{
    lua_getfield(L, t, key);
    int idx = lua_gettop(L);
    if (!lua_istable(L, idx))
        luaL_argerror(L, t, lua_pushfstring(L, "%s must be a list of strings, got %s", key, luaL_typename(L, idx)));
    lua_Integer n = list_len(L, idx, t, key, min);
    char **v = lua_newuserdatauv(L, (size_t)(n + 1) * sizeof *v, 0);
    for (lua_Integer i = 1; i <= n; i++) {
        size_t len;
        if (lua_rawgeti(L, idx, i) != LUA_TSTRING)
            luaL_argerror(L, t, lua_pushfstring(L, "%s[%I] must be a string, got %s", key, i, luaL_typename(L, -1)));
        v[i - 1] = (char *)lua_tolstring(L, -1, &len);
        if (strlen(v[i - 1]) != len)
            luaL_argerror(L, t, lua_pushfstring(L, "%s[%I] contains a NUL byte", key, i));
        lua_pop(L, 1);
    }
    v[n] = NULL;
    lua_remove(L, idx);
    return v;
}

/* Seconds to a poll() timeout in ms: negative waits for ever, NaN not at
 * all, and more than an int holds is capped (callers loop and re-check). */
static int poll_ms(double s)
{
    if (s != s) return 0;
    if (s < 0) return -1;
    if (s > 86400.0) return 86400 * 1000;
    return (int)(s * 1000.0 + 0.999);
}

static int open_stream(lua_State *L, int t, const char *key, int std, int *fd, char *err, size_t errlen)
{
    lua_getfield(L, t, key);
    const char *mode = lua_tostring(L, -1);
    int r = 0;
    if (!mode || !strcmp(mode, "null")) {
        *fd = open("/dev/null", std == 0 ? O_RDONLY : O_WRONLY | O_CLOEXEC);
    } else if (!strcmp(mode, "inherit")) {
        *fd = dup(std);
        if (*fd >= 0) fcntl(*fd, F_SETFD, FD_CLOEXEC);
    } else {
        /* a capture file: O_APPEND so that a daemon still writing through an
         * old descriptor after a restart's truncation cannot leave holes */
        *fd = open(mode, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    }
    if (*fd < 0) {
        snprintf(err, errlen, "cannot open %s for %s: %s", mode ? mode : "/dev/null", key, strerror(errno));
        r = -1;
    }
    lua_pop(L, 1);
    return r;
}

static int stdin_fd(lua_State *L, int t, char *err, size_t errlen)
{
    lua_getfield(L, t, "stdin");
    size_t len;
    const char *data = lua_tolstring(L, -1, &len);
    int fd;
    if (!data) {
        fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    } else {
        /* a memfd instead of a pipe: writing can never block on a child
         * that does not read */
        fd = memfd_create("mkharness-stdin", MFD_CLOEXEC);
        size_t off = 0;
        while (fd >= 0 && off < len) {
            ssize_t n = write(fd, data + off, len - off);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) { close(fd); fd = -1; break; }
            off += (size_t)n;
        }
        if (fd >= 0) lseek(fd, 0, SEEK_SET);
    }
    if (fd < 0) snprintf(err, errlen, "cannot prepare stdin: %s", strerror(errno));
    lua_pop(L, 1);
    return fd;
}

/* t.groups, a list of gids, as a vector in a userdata left on the stack */
static gid_t *gid_vector(lua_State *L, int t, size_t *n)
{
    lua_getfield(L, t, "groups");
    luaL_argcheck(L, lua_istable(L, -1), 1, "ids.groups must be a list of gids");
    lua_Integer len = list_len(L, -1, 1, "ids.groups", 0);
    gid_t *g = lua_newuserdatauv(L, (size_t)(len + 1) * sizeof *g, 0);
    for (lua_Integer k = 1; k <= len; k++) {
        lua_rawgeti(L, -2, k);
        g[k - 1] = (gid_t)luaL_checkinteger(L, -1);
        lua_pop(L, 1);
    }
    lua_remove(L, -2);
    *n = (size_t)len;
    return g;
}

/* ids = { uid=, gid=, groups = {...}, who= } from core.ids, into *ids (its
 * group list in a userdata left on the stack); 0 when absent */
static int spawn_ids(lua_State *L, int t, mkh_ids *ids, const char **who)
{
    if (lua_getfield(L, t, "ids") != LUA_TTABLE) {
        lua_pop(L, 1);
        return 0;
    }
    int i = lua_gettop(L);
    memset(ids, 0, sizeof *ids);
    lua_getfield(L, i, "uid");
    ids->uid = (uid_t)luaL_checkinteger(L, -1);
    lua_getfield(L, i, "gid");
    ids->gid = (gid_t)luaL_checkinteger(L, -1);
    lua_getfield(L, i, "who");
    *who = lua_tostring(L, -1); /* the ids table, kept on the stack, keeps it */
    lua_pop(L, 3);
    ids->groups = gid_vector(L, i, &ids->ngroups);
    return 1;
}

/* core.spawn{ argv=, env=, path=, cwd=, stdin=, stdout=, stderr=,
 *             stop_signal=, kill_signal=, stop_timeout=, token=, ids= } */
static int l_spawn(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    char err[1024] = "";
    mkh_spawn_opts o;
    memset(&o, 0, sizeof o);
    o.argv = string_vector(L, 1, "argv", 1); /* no program: nothing to exec */
    o.envp = string_vector(L, 1, "env", 0);
    lua_getfield(L, 1, "path");
    o.path = lua_tostring(L, -1);
    lua_getfield(L, 1, "cwd");
    o.cwd = lua_tostring(L, -1);
    lua_getfield(L, 1, "token");
    const char *token = luaL_optstring(L, -1, "");
    mkh_ids ids;
    if (spawn_ids(L, 1, &ids, &o.who)) o.ids = &ids;

    lproc *lp = lua_newuserdatauv(L, sizeof *lp, 0);
    memset(lp, 0, sizeof *lp);
    lp->p.pidfd = -1;
    lp->p.exited = 1; /* until spawned: nothing to kill in __gc */
    snprintf(lp->token, sizeof lp->token, "%s", token);
    luaL_setmetatable(L, PROC_MT);
    lua_getfield(L, 1, "stop_signal");
    lp->p.stop_sig = (int)luaL_optinteger(L, -1, SIGTERM);
    lua_getfield(L, 1, "kill_signal");
    lp->p.kill_sig = (int)luaL_optinteger(L, -1, SIGKILL);
    lua_getfield(L, 1, "stop_timeout");
    lp->p.stop_timeout = luaL_optnumber(L, -1, 10);
    /* teardown waits this long for the process */
    luaL_argcheck(L, lp->p.stop_timeout >= 0 && lp->p.stop_timeout <= 86400, 1,
                  "stop_timeout must be 0 to 86400 seconds");
    lua_pop(L, 3);

    mkh_supervise_init();
    static int cg_seq;
    o.fd_cgroup = -1;
    if (mkh_cg_enabled()) {
        o.fd_cgroup = mkh_cg_create(++cg_seq);
        if (o.fd_cgroup >= 0) lp->p.cg_id = cg_seq;
    }
    o.fd_in = stdin_fd(L, 1, err, sizeof err);
    o.fd_out = o.fd_err = -1;
    if (o.fd_in < 0 || open_stream(L, 1, "stdout", 1, &o.fd_out, err, sizeof err) != 0 ||
        open_stream(L, 1, "stderr", 2, &o.fd_err, err, sizeof err) != 0) {
        if (o.fd_in >= 0) close(o.fd_in);
        if (o.fd_out >= 0) close(o.fd_out);
        if (o.fd_cgroup >= 0) close(o.fd_cgroup);
        return push_fail(L, err);
    }
    pid_t pid;
    int pidfd;
    int r = mkh_spawn(&o, &pid, &pidfd, err, sizeof err);
    close(o.fd_in);
    close(o.fd_out);
    close(o.fd_err);
    if (o.fd_cgroup >= 0) close(o.fd_cgroup);
    if (r != 0) {
        if (lp->p.cg_id) {
            char cg[4200];
            mkh_cg_path(lp->p.cg_id, cg, sizeof cg);
            mkh_cg_kill(cg, 1.0);
            lp->p.cg_id = 0;
        }
        return push_fail(L, err);
    }
    lp->p.pid = pid;
    lp->p.pidfd = pidfd;
    lp->p.exited = 0;
    lp->p.start_ticks = mkh_start_ticks(pid);
    mkh_proc_link(&lp->p);
    return 1;
}

static int l_proc_pid(lua_State *L)
{
    lproc *lp = check_proc(L, 1);
    lua_pushinteger(L, lp->p.pid);
    return 1;
}

static int l_proc_fd(lua_State *L)
{
    lproc *lp = check_proc(L, 1);
    if (lp->p.exited) return 0;
    lua_pushinteger(L, lp->p.pidfd >= 0 ? lp->p.pidfd : mkh_exit_fd());
    return 1;
}

/* p:poll() -> nil while running; the exit code (-N for signal N) once done */
static int l_proc_poll(lua_State *L)
{
    lproc *lp = check_proc(L, 1);
    if (!mkh_proc_poll(&lp->p)) return 0;
    lua_pushinteger(L, exit_code(lp->p.status));
    return 1;
}

/* p:wait([timeout]) -> code, or nil on timeout */
static int l_proc_wait(lua_State *L)
{
    lproc *lp = check_proc(L, 1);
    double t = luaL_optnumber(L, 2, -1);
    luaL_argcheck(L, t == t, 2, "timeout is NaN");
    /* nil or negative: no limit; the engine waits in slices, so any size works */
    double deadline = lua_isnoneornil(L, 2) ? -1 : mkh_now() + (t < 0 ? 0 : t);
    int done = mkh_proc_wait(&lp->p, deadline);
    check_interrupt(L);
    if (!done) return 0;
    lua_pushinteger(L, exit_code(lp->p.status));
    return 1;
}

static int l_proc_signal(lua_State *L)
{
    lproc *lp = check_proc(L, 1);
    int sig = (int)luaL_checkinteger(L, 2);
    if (lp->p.exited) return push_fail(L, "process has exited");
    if (mkh_proc_signal(&lp->p, sig) != 0) return push_errno(L, "kill");
    lua_pushboolean(L, 1);
    return 1;
}

/* p:freeze(timeout) -> true once every process of p is paused, or nil,
 * message (which ones did not stop in time) */
static int l_proc_freeze(lua_State *L)
{
    lproc *lp = check_proc(L, 1);
    double timeout = luaL_checknumber(L, 2);
    char err[512];
    if (mkh_proc_freeze(&lp->p, 1, timeout, err, sizeof err) != 0) return push_fail(L, err);
    lua_pushboolean(L, 1);
    return 1;
}

/* p:thaw(timeout) -> true once every process of p runs again, or nil,
 * message. p:thaw() only thaws its cgroup, without waiting: for a stop
 * signal to be seen. */
static int l_proc_thaw(lua_State *L)
{
    lproc *lp = check_proc(L, 1);
    if (lua_isnoneornil(L, 2)) {
        mkh_proc_thaw(&lp->p);
        lua_pushboolean(L, 1);
        return 1;
    }
    double timeout = luaL_checknumber(L, 2);
    char err[512];
    if (mkh_proc_freeze(&lp->p, 0, timeout, err, sizeof err) != 0) return push_fail(L, err);
    lua_pushboolean(L, 1);
    return 1;
}

/* p:sweep() -> number of leftover descendants killed */
static int l_proc_sweep(lua_State *L)
{
    lproc *lp = check_proc(L, 1);
    lua_pushinteger(L, mkh_proc_sweep(&lp->p, lp->token));
    return 1;
}

/* core.adopt(pid, from) -> a proc for the daemon `pid` that the service
 * `from` started (its pid file names it): it takes over from's cgroup and
 * service token. nil, message when it cannot be followed safely. */
static int l_adopt(lua_State *L)
{
    lua_Integer pid = luaL_checkinteger(L, 1);
    lproc *from = check_proc(L, 2);
    if (pid <= 1 || pid > INT_MAX) return push_fail(L, "not a process id");
    lproc *lp = lua_newuserdatauv(L, sizeof *lp, 0);
    memset(lp, 0, sizeof *lp);
    lp->p.pidfd = -1;
    lp->p.exited = 1;
    luaL_setmetatable(L, PROC_MT);
    char err[256];
    if (mkh_proc_adopt(&lp->p, (pid_t)pid, &from->p, err, sizeof err) != 0) return push_fail(L, err);
    snprintf(lp->token, sizeof lp->token, "%s", from->token);
    return 1;
}

/* core.alive(pid) -> true when a process with that pid runs (not a zombie) */
static int l_alive(lua_State *L)
{
    lua_Integer pid = luaL_checkinteger(L, 1);
    char path[64], buf[512];
    if (pid <= 0 || pid > INT_MAX) { lua_pushboolean(L, 0); return 1; }
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    ssize_t n = mkh_read_small(path, buf, sizeof buf);
    const char *p = n > 0 ? strrchr(buf, ')') : NULL;
    lua_pushboolean(L, p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X');
    return 1;
}

/* p:foreign() -> true when p is followed by its pidfd only (not our child) */
static int l_proc_foreign(lua_State *L)
{
    lua_pushboolean(L, check_proc(L, 1)->p.foreign);
    return 1;
}

/* p:release(): once exited, reap the leader without touching its group:
 * from then on the group is never signalled by its id again */
static int l_proc_release(lua_State *L)
{
    lproc *lp = check_proc(L, 1);
    mkh_proc_reap(&lp->p);
    return 0;
}

static int l_proc_gc(lua_State *L)
{
    lproc *lp = check_proc(L, 1);
    if (!lp->p.exited) {
        mkh_proc_signal(&lp->p, SIGKILL);
        mkh_proc_wait(&lp->p, mkh_now() + 2.0);
        mkh_proc_sweep(&lp->p, lp->token);
    }
    mkh_proc_unlink(&lp->p);
    return 0;
}

/* ------------------------------------------------------------ waiting */

/* core.poll(fds, timeout) -> set of ready fds (possibly empty).
 * Returns early when the harness is interrupted. */
static int l_poll(lua_State *L)
{
    mkh_reap_strays(); /* every wait is a chance to wait for strays */
    lua_Integer len = lua_isnoneornil(L, 1) ? 0 : (luaL_checktype(L, 1, LUA_TTABLE), list_len(L, 1, 1, "fds", 0));
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
    int r = poll(pf, (nfds_t)n, poll_ms(luaL_optnumber(L, 2, -1)));
    mkh_exit_fd_drain(); /* the SIGCHLD pipe only wakes; everyone re-checks */
    check_interrupt(L);
    lua_createtable(L, 0, 4);
    for (int i = 0; r > 0 && i < n; i++) {
        if (pf[i].revents && pf[i].fd != ifd) {
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
        poll(&pf, ifd >= 0 ? 1 : 0, poll_ms(left));
        check_interrupt(L);
    }
    return 0;
}

static int l_now(lua_State *L)
{
    lua_pushnumber(L, mkh_now());
    return 1;
}

/* ---------------------------------------------------------------- watch */

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
    if (inotify_shared() < 0) return push_errno(L, "inotify_init1");
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
    if (wd < 0) return push_errno(L, path);
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

/* -------------------------------------------------------------- scanner */

/* Reads a growing capture file and hands out complete lines that contain a
 * literal needle (memmem over big blocks, so a flood is scanned at memory
 * speed); the Lua layer applies the real pattern to those candidates. The
 * partial last line is kept, bounded, so prompts without newline match.
 * A line longer than PARTIAL_MAX is handed out in pieces as it arrives,
 * each starting SCAN_OVERLAP bytes before the previous one ended: a match
 * up to that long is found wherever it sits, and memory stays bounded. */
#define SCAN_BLOCK (1 << 20)
#define PARTIAL_MAX (1 << 20)
#define SCAN_OVERLAP (64 << 10)

typedef struct {
    int fd;
    off_t off;          /* file offset read so far */
    char *buf;          /* [0, len): unconsumed bytes, from a line start unless truncated */
    size_t len, cap;
    int truncated;      /* buf starts inside a line (its head was handed out) */
    char path[];
} lscanner;

static lscanner *check_scanner(lua_State *L, int i)
{
    return (lscanner *)luaL_checkudata(L, i, SCANNER_MT);
}

static int l_scanner(lua_State *L)
{
    size_t plen;
    const char *path = luaL_checklstring(L, 1, &plen);
    /* read before the userdata takes slot 2: true starts at the current
     * end, an integer at that offset (a mark) */
    int at_offset = lua_isinteger(L, 2);
    lua_Integer from = at_offset ? lua_tointeger(L, 2) : 0;
    int from_end = !at_offset && lua_toboolean(L, 2);
    lscanner *s = lua_newuserdatauv(L, sizeof *s + plen + 1, 0);
    memset(s, 0, sizeof *s);
    s->fd = -1;
    memcpy(s->path, path, plen + 1);
    luaL_setmetatable(L, SCANNER_MT);
    if (from_end) { /* start at the current end */
        struct stat st;
        if (stat(path, &st) == 0) s->off = st.st_size;
    } else if (from > 0) {
        s->off = (off_t)from;
    }
    if (s->off > 0) {
        /* starting inside a line: keep its last byte before the start as
         * context (for %f), and say the line's head is cut off, so that `^`
         * does not match there */
        char prev = '\n';
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            if (pread(fd, &prev, 1, s->off - 1) != 1) prev = '\n';
            close(fd);
        }
        if (prev != '\n') {
            s->off--;
            s->truncated = 1;
        }
    }
    return 1;
}

/* Read more of the file; returns bytes added. */
static size_t scanner_fill(lscanner *s)
{
    if (s->fd < 0) {
        s->fd = open(s->path, O_RDONLY | O_CLOEXEC);
        if (s->fd < 0) return 0;
    }
    if (s->cap - s->len < SCAN_BLOCK) {
        size_t cap = s->len + SCAN_BLOCK;
        char *nb = realloc(s->buf, cap);
        if (!nb) return 0;
        s->buf = nb;
        s->cap = cap;
    }
    ssize_t n = pread(s->fd, s->buf + s->len, SCAN_BLOCK, s->off);
    if (n <= 0) return 0;
    s->len += (size_t)n;
    s->off += n;
    return (size_t)n;
}

static void push_line(lua_State *L, const char *p, size_t n)
{
    if (n && p[n - 1] == '\r') n--;
    lua_pushlstring(L, p, n);
}

/* memmem after a memchr for the needle's first byte: an endless line is
 * usually one byte repeated, which memchr passes several times faster */
static int has_needle(const char *h, size_t hl, const char *n, size_t nl)
{
    const char *p = memchr(h, (unsigned char)n[0], hl);
    return p && memmem(p, hl - (size_t)(p - h), n, nl);
}

/* s:next(needle) -> text, at_start, at_end: the next complete line
 * containing needle, or a piece of a line too long to keep (at_end false);
 * at_start is false when text does not begin where the line does. nil when
 * nothing more is complete (all of it is consumed). */
static int l_scanner_next(lua_State *L)
{
    lscanner *s = check_scanner(L, 1);
    size_t nlen;
    const char *needle = luaL_optlstring(L, 2, "", &nlen);
    for (;;) {
        char *end = s->len ? memrchr(s->buf, '\n', s->len) : NULL;
        if (end) {
            size_t complete = (size_t)(end - s->buf) + 1;
            char *hit = nlen ? memmem(s->buf, complete, needle, nlen) : s->buf;
            if (hit) {
                char *ls = hit;
                while (ls > s->buf && ls[-1] != '\n') ls--;
                char *le = memchr(hit, '\n', (size_t)(s->buf + complete - hit));
                push_line(L, ls, (size_t)(le - ls));
                lua_pushboolean(L, !(ls == s->buf && s->truncated));
                lua_pushboolean(L, 1);
                size_t used = (size_t)(le - s->buf) + 1;
                memmove(s->buf, s->buf + used, s->len - used);
                s->len -= used;
                s->truncated = 0;
                return 3;
            }
            memmove(s->buf, s->buf + complete, s->len - complete);
            s->len -= complete;
            s->truncated = 0;
        }
        if (s->len > PARTIAL_MAX) { /* an endless line: hand out what is dropped */
            size_t keep = nlen > SCAN_OVERLAP ? nlen : SCAN_OVERLAP;
            if (keep > PARTIAL_MAX / 2) keep = PARTIAL_MAX / 2;
            int found = !nlen || has_needle(s->buf, s->len, needle, nlen);
            if (found) {
                lua_pushlstring(L, s->buf, s->len);
                lua_pushboolean(L, !s->truncated);
                lua_pushboolean(L, 0);
            }
            memmove(s->buf, s->buf + s->len - keep, keep);
            s->len = keep;
            s->truncated = 1;
            if (found) return 3;
        }
        if (scanner_fill(s) == 0) return 0;
    }
}

/* s:partial() -> the current incomplete last line (possibly ""), and
 * whether its head was cut off (handed out by next() already) */
static int l_scanner_partial(lua_State *L)
{
    lscanner *s = check_scanner(L, 1);
    lua_pushlstring(L, s->buf ? s->buf : "", s->len);
    lua_pushboolean(L, s->truncated);
    return 2;
}

/* core.find(s, pattern [, init [, deadline]]) -> like string.find(s,
 * pattern, init), or false when it gave up because the deadline passed
 * (pmatch.c). A pending signal ends the run, as in any wait. */
static int l_find(lua_State *L)
{
    size_t ls, lp;
    const char *str = luaL_checklstring(L, 1, &ls);
    const char *pat = luaL_checklstring(L, 2, &lp);
    lua_Integer init = luaL_optinteger(L, 3, 1);
    double deadline = luaL_optnumber(L, 4, 0);
    int n = lmkh_pfind(L, str, ls, pat, lp, init > 1 ? (size_t)(init - 1) : 0, deadline);
    if (n < 0) {
        check_interrupt(L);
        lua_pushboolean(L, 0);
        return 1;
    }
    if (n == 0) lua_pushnil(L);
    return n ? n : 1;
}

static int l_scanner_gc(lua_State *L)
{
    lscanner *s = check_scanner(L, 1);
    if (s->fd >= 0) close(s->fd);
    s->fd = -1;
    free(s->buf);
    s->buf = NULL;
    s->len = s->cap = 0;
    return 0;
}

/* ---------------------------------------------------------------- dgram */

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
    if (len >= sizeof d->path) return push_fail(L, "notify socket path too long");
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, len + 1);
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return push_errno(L, "socket");
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return push_errno(L, path);
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

/* ----------------------------------------------------------------- echo */

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
    if (mkh_echo_open(e, path, name, is_err, err, sizeof err) != 0) return push_fail(L, err);
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

/* ------------------------------------------------------------ utilities */

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
    if (n < 0) return push_fail(L, err);
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
    if (mkh_parse_url(s, len, &u, err, sizeof err) != 0) return push_fail(L, err);
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
    if (!d) return push_fail(L, err);
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

static int l_free_port(lua_State *L)
{
    char err[256];
    int p = mkh_free_port(err, sizeof err);
    if (p < 0) return push_fail(L, err);
    lua_pushinteger(L, p);
    return 1;
}

static int l_tcp_probe(lua_State *L)
{
    char err[512];
    const char *host = luaL_checkstring(L, 1);
    int port = (int)luaL_checkinteger(L, 2);
    double timeout = luaL_optnumber(L, 3, 1.0);
    if (mkh_tcp_probe(host, port, timeout, err, sizeof err) != 0) return push_fail(L, err);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_unix_probe(lua_State *L)
{
    char err[512];
    if (mkh_unix_probe(luaL_checkstring(L, 1), err, sizeof err) != 0) return push_fail(L, err);
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

static int l_tail(lua_State *L)
{
    char *t = mkh_tail_file(luaL_checkstring(L, 1), (int)luaL_optinteger(L, 2, 20), 65536);
    if (!t) return 0;
    lua_pushstring(L, t);
    free(t);
    return 1;
}

/* core.read(path[, offset]) -> contents from offset, or nil, err */
static int l_read(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    off_t off = (off_t)luaL_optinteger(L, 2, 0);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return push_errno(L, path);
    struct stat st;
    fstat(fd, &st);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    char *chunk;
    ssize_t n;
    for (;;) {
        chunk = luaL_prepbuffsize(&b, 1 << 16);
        n = pread(fd, chunk, 1 << 16, off);
        if (n <= 0) break;
        luaL_addsize(&b, (size_t)n);
        off += n;
    }
    close(fd);
    luaL_pushresult(&b);
    return 1;
}

static int l_size(lua_State *L)
{
    struct stat st;
    if (stat(luaL_checkstring(L, 1), &st) != 0) {
        if (errno == ENOENT) return 0;
        /* not "missing" (a directory on the way we may not search): say why */
        lua_pushnil(L);
        lua_pushnil(L);
        lua_pushstring(L, strerror(errno));
        return 3;
    }
    lua_pushinteger(L, (lua_Integer)st.st_size);
    lua_pushstring(L, S_ISREG(st.st_mode) ? "file" : S_ISDIR(st.st_mode) ? "directory"
                    : S_ISSOCK(st.st_mode) ? "socket" : "other");
    return 2;
}

/* core.fs_full(path) -> true when the filesystem holding path has no block
 * or no inode left for an unprivileged writer (a service's ENOSPC) */
static int l_fs_full(lua_State *L)
{
    struct statvfs sv;
    if (statvfs(luaL_checkstring(L, 1), &sv) != 0) return 0;
    lua_pushboolean(L, sv.f_bavail == 0 || (sv.f_files > 0 && sv.f_favail == 0));
    return 1;
}

static int l_mkdir(lua_State *L)
{
    char err[512];
    if (mkh_mkdir_p(luaL_checkstring(L, 1), err, sizeof err) != 0) return push_fail(L, err);
    lua_pushboolean(L, 1);
    return 1;
}

/* core.ids(user, group): either may be nil, a name or a number ->
 * { uid=, gid=, groups = {...}, user=, group=, home= }, or nil, message,
 * "user" or "group" (which one is wrong) */
static int l_ids(lua_State *L)
{
    const char *user = lua_isnoneornil(L, 1) ? NULL : luaL_checkstring(L, 1);
    const char *group = lua_isnoneornil(L, 2) ? NULL : luaL_checkstring(L, 2);
    mkh_ids ids;
    const char *which;
    char err[512];
    if (mkh_ids_resolve(user, group, &ids, &which, err, sizeof err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        lua_pushstring(L, which);
        return 3;
    }
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, ids.uid);
    lua_setfield(L, -2, "uid");
    lua_pushinteger(L, ids.gid);
    lua_setfield(L, -2, "gid");
    lua_createtable(L, (int)ids.ngroups, 0);
    for (size_t i = 0; i < ids.ngroups; i++) {
        lua_pushinteger(L, ids.groups[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "groups");
    lua_pushstring(L, ids.user);
    lua_setfield(L, -2, "user");
    lua_pushstring(L, ids.group);
    lua_setfield(L, -2, "group");
    lua_pushstring(L, ids.home);
    lua_setfield(L, -2, "home");
    mkh_ids_free(&ids);
    return 1;
}

/* core.chown(path, uid, gid) / core.chmod(path, mode) -> true, or nil,
 * message, errno. chown does not follow a symbolic link (Linux cannot chmod
 * a link itself: both are for paths the harness made) */
static int l_chown(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    uid_t uid = (uid_t)luaL_checkinteger(L, 2);
    gid_t gid = (gid_t)luaL_checkinteger(L, 3);
    return luaL_fileresult(L, lchown(path, uid, gid) == 0, path);
}

static int l_chmod(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    lua_Integer mode = luaL_checkinteger(L, 2);
    luaL_argcheck(L, mode >= 0 && mode <= 07777, 2, "mode must be 0 to 07777");
    return luaL_fileresult(L, fchmodat(AT_FDCWD, path, (mode_t)mode, 0) == 0, path);
}

static int l_rmtree(lua_State *L)
{
    mkh_rmtree(luaL_checkstring(L, 1));
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
    if (!d) return push_errno(L, "/proc/self/fd");
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

/* fclose for files made by l_open_file; liolib calls it as closef. */
static int file_close(lua_State *L)
{
    luaL_Stream *p = (luaL_Stream *)luaL_checkudata(L, 1, LUA_FILEHANDLE);
    return luaL_fileresult(L, fclose(p->f) == 0, NULL);
}

/* open_file(path [, "w"|"a" [, perms]]) -> a Lua file for writing, like
 * io.open but close-on-exec from the open on: io.open's fd would be
 * inherited by every os.execute and io.popen child. perms (default 0666,
 * less the umask) apply when the file is created. Failure: nil, message,
 * errno. */
static int l_open_file(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    const char *mode = luaL_optstring(L, 2, "w");
    int flags = O_WRONLY | O_CREAT | O_CLOEXEC;
    if (!strcmp(mode, "w")) flags |= O_TRUNC;
    else if (!strcmp(mode, "a")) flags |= O_APPEND;
    else return luaL_argerror(L, 2, "mode must be \"w\" or \"a\"");
    lua_Integer perms = luaL_optinteger(L, 3, 0666);
    luaL_argcheck(L, perms >= 0 && perms <= 0777, 3, "perms must be 0 to 0777");
    luaL_Stream *p = (luaL_Stream *)lua_newuserdatauv(L, sizeof *p, 0);
    p->f = NULL;
    p->closef = NULL; /* counts as closed until open: __gc then does nothing */
    luaL_setmetatable(L, LUA_FILEHANDLE);
    int fd = open(path, flags, (mode_t)perms);
    if (fd < 0) return luaL_fileresult(L, 0, path);
    p->f = fdopen(fd, mode);
    if (!p->f) {
        int e = errno;
        close(fd);
        errno = e;
        return luaL_fileresult(L, 0, path);
    }
    p->closef = file_close;
    return 1;
}

static int l_interrupted(lua_State *L)
{
    lua_pushinteger(L, mkh_interrupted());
    return 1;
}

static const luaL_Reg proc_methods[] = {
    {"pid", l_proc_pid}, {"fd", l_proc_fd}, {"poll", l_proc_poll},
    {"wait", l_proc_wait}, {"signal", l_proc_signal}, {"sweep", l_proc_sweep},
    {"release", l_proc_release}, {"freeze", l_proc_freeze}, {"thaw", l_proc_thaw},
    {"foreign", l_proc_foreign},
    {NULL, NULL}
};

static const luaL_Reg watch_methods[] = {
    {"add", l_watch_add}, {"fd", l_watch_fd}, {"drain", l_watch_drain},
    {"close", l_watch_close}, {NULL, NULL}
};

static const luaL_Reg scanner_methods[] = {
    {"next", l_scanner_next}, {"partial", l_scanner_partial}, {"close", l_scanner_gc},
    {NULL, NULL}
};

static const luaL_Reg echo_methods[] = {
    {"flush", l_echo_flush}, {"close", l_echo_close}, {NULL, NULL}
};

static const luaL_Reg dgram_methods[] = {
    {"fd", l_dgram_fd}, {"recv", l_dgram_recv}, {"close", l_dgram_close}, {NULL, NULL}
};

static const luaL_Reg funcs[] = {
    {"spawn", l_spawn}, {"poll", l_poll}, {"sleep", l_sleep}, {"now", l_now},
    {"watch", l_watch}, {"scanner", l_scanner}, {"signum", l_signum},
    {"signame", l_signame}, {"split", l_split}, {"parse_url", l_parse_url},
    {"parse_status", l_parse_status}, {"parse_notify", l_parse_notify}, {"environ", l_environ},
    {"run_id", l_run_id}, {"run_dir", l_run_dir}, {"keep", l_keep},
    {"teardown", l_teardown}, {"free_port", l_free_port}, {"tcp_probe", l_tcp_probe},
    {"unix_probe", l_unix_probe}, {"port_owner", l_port_owner}, {"tail", l_tail},
    {"read", l_read}, {"size", l_size}, {"fs_full", l_fs_full}, {"mkdir", l_mkdir}, {"rmtree", l_rmtree},
    {"interrupted", l_interrupted}, {"dgram", l_dgram},
    {"leftovers", l_leftovers}, {"fds", l_fds}, {"children", l_children},
    {"own_child", l_own_child}, {"adopt", l_adopt}, {"alive", l_alive}, {"open_file", l_open_file}, {"find", l_find},
    {"ids", l_ids}, {"chown", l_chown}, {"chmod", l_chmod},
    {"echo", l_echo}, {"echo_setup", l_echo_setup}, {"echo_flush_all", l_echo_flush_all},
    {"echo_shutdown", l_echo_shutdown},
    {NULL, NULL}
};

static void new_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc)
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
    inotify_shared(); /* a permanent fd from the start, not a leak later */
    new_class(L, PROC_MT, proc_methods, l_proc_gc);
    new_class(L, WATCH_MT, watch_methods, l_watch_close);
    new_class(L, SCANNER_MT, scanner_methods, l_scanner_gc);
    new_class(L, DGRAM_MT, dgram_methods, l_dgram_close);
    new_class(L, ECHO_MT, echo_methods, l_echo_close);
    luaL_newlib(L, funcs);
    lua_pushstring(L, MKH_VERSION);
    lua_setfield(L, -2, "version");
    lmkh_open_http(L);
    lmkh_open_proxy(L);
    return 1;
}
