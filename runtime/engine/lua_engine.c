/*
 * lua_engine.c - the `tide.engine` module of the tide process: the table
 * that its binding files fill (see lua_engine.h). Nothing here yields or
 * calls back into Lua: the scheduler (lua/tide/sched.lua) owns the
 * coroutines.
 */
#include "lua_engine.h"

int luaopen_tide_engine(lua_State *L)
{
    lua_newtable(L); // [mod]
    tide_lua_open_http(L);
    tide_lua_open_watch(L);
    tide_lua_open_signals(L);
    tide_lua_open_clock(L);
    tide_lua_open_fd(L);
    tide_lua_open_httpd(L);
    tide_lua_open_kafka(L);
    return 1;
}
