/* Placeholder: replaced by the fault proxy binding. */
#include "lmkh.h"

void lmkh_open_proxy(lua_State *L)
{
    (void)L;
}
