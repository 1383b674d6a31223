/*
 * lua_buffer.c - recognising a request-body buffer (see lua_buffer.h).
 */
#include "lua_buffer.h"

#include <lauxlib.h>

const char *tide_codec_tobuffer(lua_State *L, int idx, size_t *len)
{
    if (lua_type(L, idx) != LUA_TUSERDATA || !lua_getmetatable(L, idx)) // [.., mt]
        return NULL;
    luaL_getmetatable(L, TIDE_BUFFER_MT); // [.., mt, buffer_mt]
    int is_buffer = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);                        // [..]
    if (!is_buffer)
        return NULL;
    const struct tide_buffer *b = lua_touserdata(L, idx);
    *len = b->len;
    return b->data;
}
