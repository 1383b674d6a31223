/*
 * lua_engine.h - the `tide.engine` Lua module: the tide process's HTTP
 * engine (http.c) bound to Lua. Only the tide process loads it; nginx uses
 * its own transport.
 */
#ifndef TIDE_LUA_ENGINE_H
#define TIDE_LUA_ENGINE_H

#include <lua.h>

/* Pushes the module table {new=, now=}. Returns 1. */
int luaopen_tide_engine(lua_State *L);

/* Adds signals() and wall_ms() to the module table on top (lua_signals.c). */
void tide_lua_open_signals(lua_State *L);

#endif
