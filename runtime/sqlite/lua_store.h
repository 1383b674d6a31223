/* lua_store.h - the `tide.sqlite` module: tide's embedded event store. */
#ifndef TIDE_LUA_STORE_H
#define TIDE_LUA_STORE_H

#include <lua.h>

int luaopen_tide_sqlite(lua_State *L);

#endif
