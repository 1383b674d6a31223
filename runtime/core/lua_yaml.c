#include "lua_core.h"

/* placeholder until the YAML binding lands */
void tide_lua_open_yaml(lua_State *L)
{
    (void)L;
}
