/* mkharness.proc: a process of the run (spawn, adopt) and its methods.
 * Errors from the OS come back as nil, message; the Lua layer turns them
 * into harness errors. */
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
    lua_Integer n = lmkh_list_len(L, idx, t, key, min);
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
    lua_Integer len = lmkh_list_len(L, -1, 1, "ids.groups", 0);
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
        return lmkh_push_fail(L, err);
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
        return lmkh_push_fail(L, err);
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
    lmkh_check_interrupt(L);
    if (!done) return 0;
    lua_pushinteger(L, exit_code(lp->p.status));
    return 1;
}

static int l_proc_signal(lua_State *L)
{
    lproc *lp = check_proc(L, 1);
    int sig = (int)luaL_checkinteger(L, 2);
    if (lp->p.exited) return lmkh_push_fail(L, "process has exited");
    if (mkh_proc_signal(&lp->p, sig) != 0) return lmkh_push_errno(L, "kill");
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
    if (mkh_proc_freeze(&lp->p, 1, timeout, err, sizeof err) != 0) return lmkh_push_fail(L, err);
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
    if (mkh_proc_freeze(&lp->p, 0, timeout, err, sizeof err) != 0) return lmkh_push_fail(L, err);
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
    if (pid <= 1 || pid > INT_MAX) return lmkh_push_fail(L, "not a process id");
    lproc *lp = lua_newuserdatauv(L, sizeof *lp, 0);
    memset(lp, 0, sizeof *lp);
    lp->p.pidfd = -1;
    lp->p.exited = 1;
    luaL_setmetatable(L, PROC_MT);
    char err[256];
    if (mkh_proc_adopt(&lp->p, (pid_t)pid, &from->p, err, sizeof err) != 0) return lmkh_push_fail(L, err);
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


static const luaL_Reg proc_methods[] = {
    {"pid", l_proc_pid}, {"fd", l_proc_fd}, {"poll", l_proc_poll},
    {"wait", l_proc_wait}, {"signal", l_proc_signal}, {"sweep", l_proc_sweep},
    {"release", l_proc_release}, {"freeze", l_proc_freeze}, {"thaw", l_proc_thaw},
    {"foreign", l_proc_foreign},
    {NULL, NULL}
};

void lmkh_open_proc(lua_State *L)
{
    lmkh_new_class(L, PROC_MT, proc_methods, l_proc_gc);
    static const luaL_Reg funcs[] = {
        {"spawn", l_spawn},
        {"adopt", l_adopt},
        {"alive", l_alive},
        {NULL, NULL}
    };
    luaL_setfuncs(L, funcs, 0);
}
