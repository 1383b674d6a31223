/*
 * lua_handle.h - a Lua userdata that owns one C object (a handle): an HTTP
 * engine, a watcher, a signalfd, a store. What the bindings of tide.engine
 * and tide.sqlite share.
 *
 * The userdata is a struct whose first field is the object's pointer: NULL
 * until the object is created and once it is closed, so that __gc and
 * close are safe at any point, also when creating it failed or raised.
 */
#ifndef TIDE_LUA_HANDLE_H
#define TIDE_LUA_HANDLE_H

#include <lauxlib.h>
#include <stddef.h>

/* Registers the metatable `mt` once: methods as __index, close as __gc,
 * tostring (may be NULL) as __tostring. // [..] -> [..] */
void tide_lua_handle_type(lua_State *L, const char *mt, const luaL_Reg *methods,
                          lua_CFunction close, lua_CFunction tostring);

/* Pushes a zeroed userdata of size bytes with the metatable mt and
 * returns it: // [..] -> [.., ud] */
void *tide_lua_handle_new(lua_State *L, size_t size, const char *mt);

/* The userdata of type mt at argument 1; raises "<closed>" when its
 * handle is closed. */
void *tide_lua_handle_check(lua_State *L, const char *mt, const char *closed);

/* The handle of the userdata of type mt at argument 1, which is marked
 * closed: the caller frees it (NULL when it was closed already). For
 * close methods and __gc, which may run twice. */
void *tide_lua_handle_close(lua_State *L, const char *mt);

/* Pushes nil and message; returns 2: a failure as `nil, message`. */
int tide_lua_handle_fail(lua_State *L, const char *message);

#endif
