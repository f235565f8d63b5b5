/* mkharness: the host. A Lua 5.4 interpreter with the module preloaded,
 * signal handling that always tears down, and the scenario CLI. The run
 * itself (arg table, error report, busted) is driven by mkharness.host. */
#define _GNU_SOURCE
#include "lmkh.h"
#include "mkh.h"
#include "host.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#ifndef MKH_SOURCE_LUA_DIR
#define MKH_SOURCE_LUA_DIR ""
#endif

static lua_State *globalL;
static pid_t supervisor; /* our parent when supervised */

static int quiet;

static const char usage[] =
    "usage: mkharness [options] SCRIPT [ARGS...]   run a scenario\n"
    "       mkharness test [busted options] [PATHS] run busted specs (default: spec/)\n"
    "       mkharness [options] -e CODE             run a chunk\n"
    "       mkharness report [FILE] [--html OUT]    draw a run's events.jsonl or directory\n"
    "                                               (default: the newest kept run) as a timeline\n"
    "       mkharness clean                         remove kept run directories of finished\n"
    "                                               runs (and the mkharness-last link)\n"
    "options (short flags bundle: -vq, -vt; a long option's value may follow\n"
    "an = sign: --timeout=5, --report=FILE):\n"
    "  -v, --verbose     events (spawned, ready after N ms via which probe, stopped,\n"
    "                    tests, mk.mark) and the services' output live, in arrival\n"
    "                    order, prefixed [name] (stderr lines [name!])\n"
    "  -t, --timestamps  prefix echoed and event lines with +S.mmms, seconds since\n"
    "                    the run started (the --report clock)\n"
    "  --color WHEN      auto (default: when stderr is a terminal and NO_COLOR is\n"
    "                    unset or empty), always or never\n"
    "  -q, --quiet       only failures\n"
    "  --timeout S       whole-run limit; on expiry tear down and exit 124\n"
    "  --keep            keep the run directory even on success (MKHARNESS_KEEP=1 too)\n"
    "  --report FILE     also write the events to FILE (they are always in the run\n"
    "                    directory's events.jsonl): JSON lines, monotonic timestamps\n"
    "  --version, -h, --help\n"
    "run directory: $MKHARNESS_TMPDIR, $TMPDIR or /tmp, mkharness-RUNID; made when\n"
    "  needed, kept on failure; the newest 20 kept ones of finished runs are left\n"
    "  (MKHARNESS_KEEP_RUNS=N), older ones removed when a run makes its own\n"
    "exit status: 0 passed, 1 failed, 2 usage or load error, 124 run timeout,\n"
    "             128+N after teardown when ended by signal N\n";

/* ---- signals: handlers only record and wake; Lua notices via a hook ----
 * A count hook makes every VM instruction take a slower path (Lua code
 * runs about half as fast), so the main thread runs without one: a thread
 * of ours, woken through a self-pipe by the handler, sets it when a
 * signal comes (lua_sethook may be called asynchronously, as lua.c does
 * from its handler). A coroutine is another Lua thread, which that hook
 * does not reach, and the main thread waits in resume() meanwhile: each
 * coroutine gets a count hook at its creation, so one looping in Lua still
 * sees Ctrl-C. */

#define HOOK_COUNT 1000 /* VM instructions between looks at the flag */

static void on_signal(int sig)
{
    mkh_interrupt(sig);
}

static void interrupted(lua_State *L, int sig)
{
    static int busy;
    if (busy) return;
    busy = 1;
    lua_sethook(L, NULL, 0, 0);
    int code = sig == SIGALRM ? 124 : 128 + sig;
    /* out of time: the supervisor's hard limit is near, so the services
     * get a short grace and the report is written before teardown */
    if (sig == SIGALRM) mkh_teardown_grace_cap(MKH_HARD_GRACE / 2);
    /* the supervisor is gone (SIGKILLed): the user wants it all ended now */
    if (supervisor > 0 && getppid() != supervisor) mkh_teardown_grace_cap(0);
    /* Let the Lua side report (services' tails, events); then tear down. */
    lua_getglobal(L, "require");
    lua_pushliteral(L, "mkharness.host");
    if (lua_pcall(L, 1, 1, 0) == LUA_OK) {
        lua_getfield(L, -1, "interrupted");
        lua_pushinteger(L, sig);
        lua_pushinteger(L, code);
        if (lua_pcall(L, 2, 0, 0) != LUA_OK && !quiet)
            fprintf(stderr, "mkharness: %s\n", lua_tostring(L, -1));
    }
    mkh_teardown(1);
    fflush(NULL);
    _exit(code);
}

static void stop_hook(lua_State *L, lua_Debug *ar)
{
    /* cheap: a flag read; the work is done once a signal has come */
    (void)ar;
    int sig = mkh_interrupted();
    if (sig) interrupted(L, sig);
}

static void hook_now(lua_State *L)
{
    lua_sethook(L, stop_hook, LUA_MASKCOUNT, 1);
}

/* The thread that hooks the main Lua thread (and the chaos client it is
 * resuming) when a signal comes: at each one, so that a hook a
 * coroutine's creation took away at that very moment is back at the next. */
static void *hook_on_signal(void *arg)
{
    int fd = *(int *)arg;
    char c;
    for (;;) {
        ssize_t n = read(fd, &c, 1);
        if (n == 1) {
            hook_now(globalL);
            lmkh_with_resumed(hook_now); /* a chaos client, which has no hook of its own */
        } else if (n == 0 || errno != EINTR)
            return NULL;
    }
}

/* coroutine.create and coroutine.wrap (upvalue 1: the library's own):
 * the new coroutine inherits its creator's hook (lua_newthread copies
 * it), so the creator carries the count hook for the moment of the call */
static int hooked_creation(lua_State *L)
{
    /* checked here, so that the message names the caller's function as
     * the library's own would; after it nothing but memory can fail */
    luaL_checktype(L, 1, LUA_TFUNCTION);
    int had = lua_gethook(L) != NULL;
    if (!had) lua_sethook(L, stop_hook, LUA_MASKCOUNT, HOOK_COUNT);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    /* a signal's hook, set meanwhile by the thread, must stay */
    if (!had && !mkh_interrupted()) lua_sethook(L, NULL, 0, 0);
    return lua_gettop(L);
}

static void hook_coroutines(lua_State *L)
{
    lua_getglobal(L, "coroutine");
    const char *names[] = { "create", "wrap" };
    for (int i = 0; i < 2; i++) {
        lua_getfield(L, -1, names[i]);
        lua_pushcclosure(L, hooked_creation, 1);
        lua_setfield(L, -2, names[i]);
    }
    lua_pop(L, 1);
}

static void install_signals(double timeout)
{
    mkh_interrupt_init();
    static int note_fd;
    note_fd = mkh_interrupt_note_fd();
    if (note_fd >= 0) {
        pthread_t t;
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old); /* the handlers run on the Lua thread */
        if (pthread_create(&t, NULL, hook_on_signal, &note_fd) == 0) pthread_detach(t);
        else note_fd = -1;
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    if (timeout > 0) {
        sigaction(SIGALRM, &sa, NULL);
        struct itimerval it;
        memset(&it, 0, sizeof it);
        it.it_value.tv_sec = (time_t)timeout;
        it.it_value.tv_usec = (suseconds_t)((timeout - (double)(time_t)timeout) * 1e6);
        if (it.it_value.tv_sec == 0 && it.it_value.tv_usec == 0) it.it_value.tv_usec = 1;
        setitimer(ITIMER_REAL, &it, NULL);
    }
    /* a closed pipe must not kill the host silently */
    signal(SIGPIPE, SIG_IGN);
    lmkh_set_interrupt_handler(interrupted);
    if (note_fd >= 0) hook_coroutines(globalL);
    else lua_sethook(globalL, stop_hook, LUA_MASKCOUNT, HOOK_COUNT); /* no thread: always hooked */
}

/* ---- finding our Lua files ---- */

static int file_exists(const char *p)
{
    return access(p, R_OK) == 0;
}

/* The installed tree (<prefix>/bin/../share/lua/5.4) wins over the source
 * tree compiled in, so an install works without LUA_PATH. */
static void set_lua_path(lua_State *L)
{
    char exe[PATH_MAX], dir[PATH_MAX + 64], probe[PATH_MAX + 128];
    const char *found = NULL;
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) *slash = '\0';
        snprintf(dir, sizeof dir, "%s/../share/lua/5.4", exe);
        snprintf(probe, sizeof probe, "%s/mkharness/init.lua", dir);
        if (file_exists(probe)) found = dir;
    }
    if (!found && MKH_SOURCE_LUA_DIR[0]) {
        snprintf(probe, sizeof probe, "%s/mkharness/init.lua", MKH_SOURCE_LUA_DIR);
        if (file_exists(probe)) found = MKH_SOURCE_LUA_DIR;
    }
    if (!found) return;
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", found, found, lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_pop(L, 2);
}

typedef struct { struct { const unsigned char *p; size_t n; } piece[4]; int next; } chunk_reader;

static const char *read_pieces(lua_State *L, void *ud, size_t *size)
{
    (void)L;
    chunk_reader *r = ud;
    if (r->next >= 4) { *size = 0; return NULL; }
    *size = r->piece[r->next].n;
    return (const char *)r->piece[r->next++].p;
}

/* package.searchers entry before Lua's own: a module compiled in at build
 * time (host_chunks), loaded as bytecode when the file require would read
 * is still the source it was compiled from. Anything else: no answer, and
 * the next searcher reads the file. */
static int embedded_searcher(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    const host_chunk *c = host_chunks;
    while (c->module && strcmp(c->module, name) != 0) c++;
    if (!c->module) return 0;
    /* the file require would read: the first of package.path's
     * templates that opens, as package.searchpath finds it, but opened
     * once (searchpath opens it to test it, then we would again) */
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    const char *path = lua_tostring(L, -1);
    if (!path) return 0;
    luaL_gsub(L, name, ".", LUA_DIRSEP);
    const char *stem = lua_tostring(L, -1);
    int fd = -1;
    const char *file = NULL;
    for (const char *t = path; *t && fd < 0; ) {
        const char *end = strchr(t, *LUA_PATH_SEP);
        if (!end) end = t + strlen(t);
        if (end > t) {
            lua_pushlstring(L, t, (size_t)(end - t));
            file = luaL_gsub(L, lua_tostring(L, -1), LUA_PATH_MARK, stem);
            fd = open(file, O_RDONLY | O_CLOEXEC);
            if (fd < 0) lua_pop(L, 2);
        }
        t = *end ? end + 1 : end;
    }
    if (fd < 0) return 0;
    /* one byte more than expected: a longer file shows as a mismatch */
    size_t want = c->src_len + 1, got = 0;
    char *src = lua_newuserdatauv(L, want, 0);
    ssize_t r;
    while (got < want && ((r = read(fd, src + got, want - got)) > 0 || (r < 0 && errno == EINTR)))
        if (r > 0) got += (size_t)r;
    close(fd);
    if (got != c->src_len || host_fnv1a(src, got) != c->src_hash) return 0;
    if (c->name_at + 3 > c->bc_len || memcmp(c->bc + c->name_at, "\x83@?", 3) != 0) return 0;
    /* the chunk's name becomes "@FILE", as for a loaded file: its size
     * (length + 1) in Lua's dump format, 7 bits a byte, the last marked */
    lua_pushfstring(L, "@%s", file);
    size_t nlen, x;
    const char *chunkname = lua_tolstring(L, -1, &nlen);
    x = nlen + 1;
    unsigned char size[16];
    int n = 0;
    do { size[15 - n++] = x & 0x7f; x >>= 7; } while (x && n < 16);
    size[15] |= 0x80;
    /* the pieces are read in place: nothing is copied */
    chunk_reader rd = { { { c->bc, c->name_at }, { size + 16 - n, (size_t)n },
                          { (const unsigned char *)chunkname, nlen },
                          { c->bc + c->name_at + 3, c->bc_len - c->name_at - 3 } }, 0 };
    if (lua_load(L, read_pieces, &rd, chunkname, "b") != LUA_OK) return 0;
    lua_pushstring(L, file); /* the loader's second argument, as Lua's own searcher gives */
    return 2;
}

static void add_searcher(lua_State *L)
{
    if (!host_chunks[0].module) return;
    const char *off = getenv("MKHARNESS_BYTECODE"); /* "0": always read the sources */
    if (off && !strcmp(off, "0")) return;
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "searchers");
    lua_Integer n = luaL_len(L, -1);
    for (lua_Integer k = n; k >= 2; k--) { /* make room at 2: after the preload searcher */
        lua_rawgeti(L, -1, k);
        lua_rawseti(L, -2, k + 1);
    }
    lua_pushcfunction(L, embedded_searcher);
    lua_rawseti(L, -2, 2);
    lua_pop(L, 2);
}

/* --color: auto is on for a terminal, unless NO_COLOR is set and not empty
 * (no-color.org) */
static int use_color(const char *when)
{
    if (!strcmp(when, "always")) return 1;
    if (!strcmp(when, "never")) return 0;
    const char *no = getenv("NO_COLOR");
    return isatty(2) && !(no && no[0]);
}

/* A usage error is one line and a pointer to --help: the whole usage
 * would bury the line that says what was wrong. */
static int bad_usage(const char *msg, const char *what)
{
    fprintf(stderr, "mkharness: %s%s%s; see mkharness --help\n", msg, what ? ": " : "", what ? what : "");
    return 2;
}

/* ---- options: getopt_long, GNU style (--name=value or --name value,
 * bundled short flags -vq), stopping at the script name as lua.c does, so
 * the script's (and busted's) arguments are never taken for ours ---- */

/* Edit distance with adjacent transpositions (tset -> test is one edit),
 * for did-you-mean; words longer than 31 bytes are never close. */
static int edit_distance(const char *a, const char *b)
{
    size_t n = strlen(a), m = strlen(b);
    if (n > 31 || m > 31) return 99;
    int d[32][32];
    for (size_t i = 0; i <= n; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= m; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= n; i++)
        for (size_t j = 1; j <= m; j++) {
            int cost = a[i - 1] != b[j - 1];
            int v = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < v) v = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < v) v = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < v)
                v = d[i - 2][j - 2] + 1;
            d[i][j] = v;
        }
    return d[n][m];
}

/* close enough to be a typo: at most 2 edits, and fewer than half the word */
static int close_word(const char *typed, const char *word)
{
    int dist = edit_distance(typed, word);
    return dist <= 2 && (size_t)dist * 2 < strlen(word);
}

/* Long-only options get values past any char, so getopt's optopt tells
 * them apart from the short flags. */
enum { OPT_KEEP = 256, OPT_COLOR, OPT_VERSION, OPT_TIMEOUT, OPT_REPORT };
static const char short_opts[] = "+:vqthe:"; /* +: stop at the script; ':' missing values reported as ':' */
static const struct option long_opts[] = {
    {"verbose", no_argument, NULL, 'v'},        {"quiet", no_argument, NULL, 'q'},
    {"keep", no_argument, NULL, OPT_KEEP},      {"timestamps", no_argument, NULL, 't'},
    {"color", required_argument, NULL, OPT_COLOR}, {"version", no_argument, NULL, OPT_VERSION},
    {"help", no_argument, NULL, 'h'},           {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"report", required_argument, NULL, OPT_REPORT}, {NULL, 0, NULL, 0},
};

/* getopt found an argument it could not take: say which, and what was meant. */
static int option_error(int opt, int optopt_seen, const char *arg)
{
    if (opt == ':') {
        switch (optopt_seen) {
        case 'e': return bad_usage("-e needs a chunk of code", NULL);
        case OPT_COLOR: return bad_usage("--color needs auto, always or never", NULL);
        case OPT_TIMEOUT: return bad_usage("--timeout needs a number of seconds", NULL);
        default: return bad_usage("--report needs a file name", NULL);
        }
    }
    if (strncmp(arg, "--", 2) != 0) {
        char opt_text[3] = {'-', (char)optopt_seen, '\0'};
        return bad_usage("unknown option", opt_text);
    }
    if (optopt_seen) return bad_usage("this option takes no value", arg); /* --keep=yes */
    /* an unknown or ambiguous long option: arg is the word as typed */
    char name[64];
    size_t len = strcspn(arg + 2, "=");
    snprintf(name, sizeof name, "%.*s", (int)(len < sizeof name ? len : sizeof name - 1), arg + 2);
    const char *first = NULL, *second = NULL;
    for (const struct option *o = long_opts; o->name; o++)
        if (len && !strncmp(o->name, name, len)) {
            if (!first) first = o->name;
            else if (!second) second = o->name;
        }
    if (first && second) {
        fprintf(stderr, "mkharness: ambiguous option %s (--%s or --%s?); see mkharness --help\n", arg, first,
                second);
        return 2;
    }
    for (const struct option *o = long_opts; o->name; o++)
        if (close_word(name, o->name)) {
            fprintf(stderr, "mkharness: unknown option: %s (did you mean --%s?); see mkharness --help\n", arg,
                    o->name);
            return 2;
        }
    return bad_usage("unknown option", arg);
}

int main(int argc, char **argv)
{
    /* the run's guardian, exec'd by its host (never an option of ours) */
    if (argc > 1 && mkh_guardian_exec_main(argc, argv) == 0) return 0;
    int verbose = 0, keep = 0, stamps = 0;
    const char *color = "auto";
    double timeout = 0;
    const char *report = NULL;
    const char *codes[64];
    int ncodes = 0;
    int opt;
    opterr = 0; /* our messages, with did-you-mean, not getopt's */
    for (;;) {
        /* the argument getopt looks at next: within a bundle (-vx) optind
         * stays on it until its last flag, so this is the one an error is in */
        const char *arg = optind < argc ? argv[optind] : "";
        opt = getopt_long(argc, argv, short_opts, long_opts, NULL);
        if (opt == -1) break;
        switch (opt) {
        case 'v': verbose++; break;
        case 'q': quiet = 1; break;
        case 't': stamps = 1; break;
        case OPT_KEEP: keep = 1; break;
        case 'h': fputs(usage, stdout); return 0;
        case OPT_VERSION: printf("mkharness %s (%s)\n", MKH_VERSION, LUA_RELEASE); return 0;
        case 'e':
            if (ncodes == 64) return bad_usage("too many -e chunks", NULL);
            codes[ncodes++] = optarg;
            break;
        case OPT_COLOR:
            color = optarg;
            if (strcmp(color, "auto") != 0 && strcmp(color, "always") != 0 && strcmp(color, "never") != 0)
                return bad_usage("--color takes auto, always or never, got", color);
            break;
        case OPT_TIMEOUT: {
            char *end;
            timeout = strtod(optarg, &end);
            if (*end || end == optarg || !(timeout > 0))
                return bad_usage("--timeout needs a positive number of seconds, got", optarg);
            break;
        }
        case OPT_REPORT:
            if (!*optarg) return bad_usage("--report needs a file name", NULL);
            report = optarg;
            break;
        default: return option_error(opt, optopt, arg);
        }
    }
    int i = optind;
    const char *mode = "script";
    const char *target = i < argc ? argv[i] : NULL;
    if (target && !strcmp(target, "test")) mode = "test";
    else if (target && !strcmp(target, "report")) mode = "report";
    else if (target && !strcmp(target, "clean") && i + 1 == argc) {
        /* kept run directories of finished runs, and the mkharness-last link */
        const char *base;
        size_t n = mkh_runs_clean(&base);
        printf("mkharness clean: removed %zu kept run director%s from %s\n", n, n == 1 ? "y" : "ies", base);
        return 0;
    }
    else if (!target && ncodes) mode = "code";
    else if (!target) return bad_usage("no script given (usage: mkharness [options] SCRIPT [ARGS...])", NULL);
    /* a mistyped subcommand (tset): a bare word that names no file */
    if (!strcmp(mode, "script") && !strpbrk(target, "/.") && access(target, F_OK) != 0) {
        const char *sub = close_word(target, "test") ? "test" : close_word(target, "report") ? "report"
                        : close_word(target, "clean") ? "clean" : NULL;
        if (sub) {
            fprintf(stderr, "mkharness: no script `%s` (did you mean `%s`?); see mkharness --help\n", target, sub);
            return 2;
        }
    }

    supervisor = host_supervise(timeout); /* returns in the host process */
    mkh_guardian_exec_self((const void *)&usage);
    lua_State *L = luaL_newstate();
    if (!L) { fprintf(stderr, "mkharness: cannot create Lua state\n"); return 1; }
    globalL = L;
    luaL_openlibs(L);
    set_lua_path(L);
    add_searcher(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_mkharness_core);
    lua_setfield(L, -2, "mkharness.core");
    lua_pop(L, 1);
    install_signals(timeout);

    /* require("mkharness.host").main{ ... } -> exit status */
    lua_getglobal(L, "require");
    lua_pushliteral(L, "mkharness.host");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        fprintf(stderr, "mkharness: cannot load the mkharness Lua files: %s\n", lua_tostring(L, -1));
        return 2;
    }
    lua_getfield(L, -1, "main");
    lua_createtable(L, 0, 8);
    lua_pushstring(L, mode); lua_setfield(L, -2, "mode");
    lua_createtable(L, ncodes, 0);
    for (int k = 0; k < ncodes; k++) {
        lua_pushstring(L, codes[k]);
        lua_rawseti(L, -2, k + 1);
    }
    lua_setfield(L, -2, "code");
    lua_pushinteger(L, verbose); lua_setfield(L, -2, "verbose");
    lua_pushboolean(L, quiet); lua_setfield(L, -2, "quiet");
    lua_pushboolean(L, keep); lua_setfield(L, -2, "keep");
    lua_pushboolean(L, stamps); lua_setfield(L, -2, "timestamps");
    lua_pushboolean(L, use_color(color)); lua_setfield(L, -2, "color");
    if (report) { lua_pushstring(L, report); lua_setfield(L, -2, "report"); }
    if (timeout > 0) { lua_pushnumber(L, timeout); lua_setfield(L, -2, "timeout"); }
    lua_pushstring(L, argv[0]); lua_setfield(L, -2, "progname");
    /* script and its arguments, as lua.c builds `arg` */
    lua_createtable(L, argc - i, 0);
    for (int k = i; k < argc; k++) {
        lua_pushstring(L, argv[k]);
        lua_rawseti(L, -2, k - i);
    }
    lua_setfield(L, -2, "argv");
    int status = 1;
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        fprintf(stderr, "mkharness: internal error: %s\n", lua_tostring(L, -1));
    } else {
        status = (int)lua_tointeger(L, -1);
    }
    mkh_teardown(1);
    fflush(NULL);
    lua_close(L);
    return status;
}
