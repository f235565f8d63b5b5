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

/* t[key] of core.spawn's table (argument 1), pushed and checked */
static lua_Integer field_integer(lua_State *L, const char *key, lua_Integer lo, lua_Integer hi)
{
    lua_getfield(L, 1, key);
    int isnum;
    lua_Integer v = lua_tointegerx(L, -1, &isnum);
    if (!isnum || v < lo || v > hi) luaL_error(L, "core.spawn: %s must be an integer %d to %d", key, (int)lo, (int)hi);
    return v;
}

/* t.stdout = "null" | "inherit" | "file" (then t.stdout_path): one key,
 * one meaning */
static void field_io(lua_State *L, const char *key, mkh_io *io)
{
    static const char *const modes[] = { "null", "inherit", "file", NULL };
    lua_getfield(L, 1, key);
    const char *m = lua_tostring(L, -1);
    int i = 0;
    while (m && modes[i] && strcmp(modes[i], m) != 0) i++;
    if (!m || !modes[i]) luaL_error(L, "core.spawn: %s must be \"null\", \"inherit\" or \"file\"", key);
    io->mode = i == 0 ? MKH_IO_NULL : i == 1 ? MKH_IO_INHERIT : MKH_IO_FILE;
    if (io->mode == MKH_IO_FILE) {
        lua_getfield(L, 1, lua_pushfstring(L, "%s_path", key));
        io->path = lua_tostring(L, -1);
        if (!io->path) luaL_error(L, "core.spawn: %s = \"file\" needs %s_path", key, key);
    }
}

mkh_proc *lmkh_new_proc(lua_State *L, const char *token)
{
    lproc *lp = lua_newuserdatauv(L, sizeof *lp, 0);
    memset(lp, 0, sizeof *lp);
    lp->p.pidfd = -1;
    lp->p.exited = 1; /* until spawned: nothing to kill in __gc */
    snprintf(lp->token, sizeof lp->token, "%s", token ? token : "");
    luaL_setmetatable(L, PROC_MT);
    return &lp->p;
}

/* core.spawn{ argv=, env=, path=, cwd=, stdin=, stdout=, stdout_path=, stderr=, stderr_path=,
 *             stop_signal=, kill_signal=, stop_timeout=, token=, ids=, lab=, lab_host=, lab_where= }:
 * converts the table; the engine (mkh_proc_start) does the rest. Every
 * field but cwd, stdin, token, ids and the lab's is required: the defaults live in
 * lua/mkharness/defaults.lua.
 * core.spawn_start{ same }: the same start with its launch on the spawn
 * thread: a mkharness.spawning (lspawn.c) to wait for and take the proc
 * from; false, message when no thread can be had (core.spawn then). */
static int spawn(lua_State *L, int async)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    char err[1024] = "";
    mkh_start_opts o;
    memset(&o, 0, sizeof o);
    o.spawn.argv = string_vector(L, 1, "argv", 1); /* no program: nothing to exec */
    o.spawn.envp = string_vector(L, 1, "env", 0);
    lua_getfield(L, 1, "path");
    o.spawn.path = lua_tostring(L, -1);
    lua_getfield(L, 1, "cwd");
    o.spawn.cwd = lua_tostring(L, -1);
    lua_getfield(L, 1, "token");
    const char *token = luaL_optstring(L, -1, "");
    lua_getfield(L, 1, "stdin");
    o.stdin_data = lua_tolstring(L, -1, &o.stdin_len);
    o.stop_sig = (int)field_integer(L, "stop_signal", 1, 64);
    o.kill_sig = (int)field_integer(L, "kill_signal", 1, 64);
    lua_getfield(L, 1, "stop_timeout");
    o.stop_timeout = lua_tonumber(L, -1);
    /* teardown waits this long for the process */
    luaL_argcheck(L, lua_type(L, -1) == LUA_TNUMBER && o.stop_timeout >= 0 && o.stop_timeout <= 86400, 1,
                  "stop_timeout must be 0 to 86400 seconds");
    field_io(L, "stdout", &o.out);
    field_io(L, "stderr", &o.err);
    mkh_ids ids;
    if (spawn_ids(L, 1, &ids, &o.spawn.who)) o.spawn.ids = &ids;
    int ns[3];
    if (lua_getfield(L, 1, "lab") != LUA_TNIL) { /* run inside a lab host (0: its control node) */
        struct mkh_lab *lab = lmkh_check_lab(L, -1);
        if (mkh_lab_ns_fds(lab, (int)field_integer(L, "lab_host", 0, MKH_LAB_HOSTS_MAX) - 1, ns) != 0)
            luaL_error(L, "core.spawn: no such lab host");
        o.spawn.ns = ns;
        lua_getfield(L, 1, "lab_where");
        o.spawn.where = lua_tostring(L, -1);
    }

    if (async) {
        /* the userdata first: once the launch is queued nothing may fail
         * before it has its owner */
        mkh_launch **slot = lmkh_new_spawning(L, token);
        int no_thread;
        *slot = mkh_proc_start_async(&o, &no_thread, err, sizeof err);
        if (*slot) return 1;
        if (!no_thread) return lmkh_push_fail(L, err);
        lua_pushboolean(L, 0);
        lua_pushstring(L, err);
        return 2;
    }
    mkh_proc *p = lmkh_new_proc(L, token);
    if (mkh_proc_start(p, &o, err, sizeof err) != 0) return lmkh_push_fail(L, err);
    return 1;
}

static int l_spawn(lua_State *L) { return spawn(L, 0); }
static int l_spawn_start(lua_State *L) { return spawn(L, 1); }

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
    /* its own pidfd stays readable from the exit on; the shared SIGCHLD
     * pipe of the fallback is drained by every poll */
    lua_pushboolean(L, lp->p.pidfd >= 0);
    return 2;
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
        {"spawn_start", l_spawn_start},
        {"adopt", l_adopt},
        {"alive", l_alive},
        {NULL, NULL}
    };
    luaL_setfuncs(L, funcs, 0);
}
