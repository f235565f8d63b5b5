/* The Lua binding's entry points, shared by core.so and the host. */
#ifndef LMKH_H
#define LMKH_H

#include <lua.h>

int luaopen_mkharness_core(lua_State *L);

/* The host's reaction to SIGINT/SIGTERM/SIGHUP/--timeout, run in Lua
 * context (a hook or a wait that noticed the signal). Does not return. */
typedef void (*mkh_interrupt_fn)(lua_State *L, int sig);
void lmkh_set_interrupt_handler(mkh_interrupt_fn fn);

/* http.c: adds http_request to the core table on top of the stack. */
void lmkh_open_http(lua_State *L);

/* lproxy.c: adds the fault proxy's functions to the core table on top. */
void lmkh_open_proxy(lua_State *L);

/* pmatch.c: string.find(s, p, init + 1) that gives up when `deadline`
 * (mkh_now() seconds; <= 0: none) passes or a signal is pending. Returns
 * the number of values pushed (start, end, captures), 0 for no match (none
 * pushed), -1 when it gave up. */
int lmkh_pfind(lua_State *L, const char *s, size_t ls, const char *p, size_t lp,
               size_t init, double deadline);

#endif
