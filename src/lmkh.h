/* The Lua binding's entry points, shared by core.so and the host. */
#ifndef LMKH_H
#define LMKH_H

#include <lua.h>

#include <lauxlib.h>

int luaopen_mkharness_core(lua_State *L);

/* The userdata types, one metatable name each. */
#define PROC_MT "mkharness.proc"
#define WATCH_MT "mkharness.watch"
#define SCANNER_MT "mkharness.scanner"
#define DGRAM_MT "mkharness.dgram"
#define ECHO_MT "mkharness.echo"
#define SPAWNING_MT "mkharness.spawning"

/* Shared by the binding files (lmkh.c). */
void lmkh_check_interrupt(lua_State *L);   /* after a wait a signal may have cut short */
int lmkh_push_fail(lua_State *L, const char *msg);   /* nil, msg */
int lmkh_push_errno(lua_State *L, const char *what); /* nil, "what: strerror" */
/* The length of the list at idx, refused (argument `arg`, named `what`)
 * when it is negative, absurd or under `min`. */
lua_Integer lmkh_list_len(lua_State *L, int idx, int arg, const char *what, lua_Integer min);
int lmkh_poll_ms(double s);                 /* seconds -> poll() milliseconds, clamped */
void lmkh_new_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc);

/* Each adds its functions (and registers its class) into the core table on top. */
void lmkh_open_proc(lua_State *L);
void lmkh_open_watch(lua_State *L);
void lmkh_open_scanner(lua_State *L);
void lmkh_open_dgram(lua_State *L);
void lmkh_open_echo(lua_State *L);
void lmkh_open_spawning(lua_State *L);
void lmkh_open_run(lua_State *L);
void lmkh_open_text(lua_State *L);
void lmkh_open_net(lua_State *L);
void lmkh_open_file(lua_State *L);

/* The host's reaction to SIGINT/SIGTERM/SIGHUP/--timeout, run in Lua
 * context (a hook or a wait that noticed the signal). Does not return. */
typedef void (*mkh_interrupt_fn)(lua_State *L, int sig);
void lmkh_set_interrupt_handler(mkh_interrupt_fn fn);

/* lrun.c: calls fn(co) for the coroutine core.resume is running (a chaos
 * client, which runs without a count hook), if one is, while it cannot
 * end: for the host's hook thread, which hooks it when a signal comes. */
void lmkh_with_resumed(void (*fn)(lua_State *co));

/* lhttp.c: adds http_request to the core table on top of the stack. */
void lmkh_open_http(lua_State *L);

/* lproxy.c: adds the fault proxy's functions to the core table on top. */
void lmkh_open_proxy(lua_State *L);

#define LMKH_LAB_MT "mkharness.lab"
void lmkh_open_lab(lua_State *L);
void lmkh_open_tcp(lua_State *L);
struct mkh_lab *lmkh_check_lab(lua_State *L, int i); /* lproc.c spawns into a lab's host */
/* A new proc userdata (lproc.c), pushed, not started yet; and a new
 * spawning one (lspawn.c), pushed, whose launch the caller fills in. */
struct mkh_proc *lmkh_new_proc(lua_State *L, const char *token);
struct mkh_launch **lmkh_new_spawning(lua_State *L, const char *token);

/* pmatch.c: string.find(s, p, init + 1) that gives up when `deadline`
 * (mkh_now() seconds; <= 0: none) passes or a signal is pending. Returns
 * the number of values pushed (start, end, captures), 0 for no match (none
 * pushed), -1 when it gave up. */
int lmkh_pfind(lua_State *L, const char *s, size_t ls, const char *p, size_t lp,
               size_t init, double deadline);

#endif
