#include "lua_core.h"

#include <lauxlib.h>

#include "version.h"

int luaopen_tide_core(lua_State *L)
{
    lua_newtable(L); // [core]
    lua_pushliteral(L, TIDE_VERSION);
    lua_setfield(L, -2, "version");
    tide_lua_open_sigv4(L);
    tide_lua_open_codec(L);
    tide_lua_open_retry(L);
    tide_lua_open_random(L);
    tide_lua_open_yaml(L);
    tide_lua_open_fs(L);
    tide_lua_open_json(L);
    tide_lua_open_input(L);
    tide_lua_open_sign(L);
    return 1;
}
