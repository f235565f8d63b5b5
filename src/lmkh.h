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

#endif
