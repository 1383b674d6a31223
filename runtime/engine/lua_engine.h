/*
 * lua_engine.h - the pieces of the `tide.engine` Lua module: the tide
 * process's event-loop primitives bound to Lua. Only the tide process loads
 * it; nginx uses its own transport and clock.
 *
 * One binding file per concern, each adding its functions to the module
 * table on top of the stack: // [mod]
 */
#ifndef TIDE_LUA_ENGINE_H
#define TIDE_LUA_ENGINE_H

#include <lua.h>

void tide_lua_open_http(lua_State *L);    /* new: the HTTP client (lua_http.c over http.c) */
void tide_lua_open_watch(lua_State *L);   /* watch: inotify + SIGHUP (lua_watch.c over watch.c) */
void tide_lua_open_signals(lua_State *L); /* signals: a signalfd (lua_signals.c over signals.c) */
void tide_lua_open_clock(lua_State *L);   /* now, wall_ms (lua_clock.c) */
void tide_lua_open_fd(lua_State *L);      /* read: one read(2) (lua_fd.c) */
void tide_lua_open_httpd(lua_State *L);   /* httpd, process: /metrics (lua_httpd.c over httpd.c) */
void tide_lua_open_kafka(lua_State *L);   /* kafka: the sinks' producer (lua_kafka.c over kafka.c) */

/* Pushes the module table. Returns 1. */
int luaopen_tide_engine(lua_State *L);

#endif
