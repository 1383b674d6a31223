/*
 * lua_buffer.h - request bodies held in a Lua userdata instead of a string.
 *
 * core.encode_request_buffer returns the JSON text in a userdata of this
 * layout instead of a Lua string: LuaJIT interns every string, and request
 * bodies that differ only in a few bytes fall into the same bucket of its
 * sparse string hash, so each new one was compared against every other
 * body not yet collected. core.sign (through the FFI, lua/tide/ffi.lua
 * declares the layout) and the engine read the bytes in place.
 *
 * Its own file so that tide.engine reads buffers without linking the codec.
 */
#ifndef TIDE_LUA_BUFFER_H
#define TIDE_LUA_BUFFER_H

#include <lua.h>
#include <stddef.h>

#define TIDE_BUFFER_MT "tide.core.buffer"

struct tide_buffer {
    size_t len;
    char data[];
};

/* The bytes of the buffer at idx and their count, or NULL when the value at
 * idx is not a buffer. Valid while the buffer is reachable. */
const char *tide_codec_tobuffer(lua_State *L, int idx, size_t *len);

#endif
