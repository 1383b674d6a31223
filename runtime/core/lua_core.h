/*
 * lua_core.h - the pieces of the `tide.core` Lua module.
 *
 * `tide.core` exposes tide's pure C parts (no sockets, no clock of its own)
 * to any LuaJIT: the tide process and nginx's Lua module load the same .so.
 * Each binding file adds its functions to the module table on top of the
 * stack: // [core]
 */
#ifndef TIDE_LUA_CORE_H
#define TIDE_LUA_CORE_H

#include <lua.h>

void tide_lua_open_sigv4(lua_State *L);   /* sha256_hex, credentials, region (lua_sigv4.c) */
void tide_lua_open_codec(lua_State *L);   /* DynamoDB JSON codec (lua_codec.c) */
void tide_lua_open_retry(lua_State *L);   /* retry classification, backoff (lua_retry.c) */
void tide_lua_open_random(lua_State *L);  /* random_bytes, random_hex (lua_random.c) */
void tide_lua_open_yaml(lua_State *L);    /* yaml_decode (lua_yaml.c) */
void tide_lua_open_fs(lua_State *L);      /* list_dir, stat (lua_fs.c) */
void tide_lua_open_json(lua_State *L);    /* json_encode (lua_json.c) */
void tide_lua_open_input(lua_State *L);   /* decode_input (lua_input.c) */
/* sign: a new instance of lua/tide/sigv4.lua (a signer of its own, through
 * the FFI), which reads request buffers: opened after the codec, whose
 * buffer metatable it is given (lua_sigv4.c). Raises when tide's Lua
 * library is not on package.path. */
void tide_lua_open_sign(lua_State *L);

int luaopen_tide_core(lua_State *L);

#endif
