/*
 * lua_decode.c - core.decode_response and core.decode_value: DynamoDB JSON
 * text to plain Lua values (conventions: docs/codec.md).
 *
 * The pure decoder (ddb_decode.c) parses the text and applies the
 * marshalling rules; this file is its visitor, which builds the Lua values
 * as they come, with no tree in between. The tables being filled sit on
 * the Lua stack, each object's current key right above its table: a
 * finished value is stored with lua_rawset(-3) or lua_rawseti(-2).
 *
 * Resources: the decoder and its parser are owned by the call's guard (see
 * lua_codec.h), so a Lua error raised inside a callback (out of memory, a
 * failing finalizer) cannot leak them; yajl allocates from the guard's
 * arena; everything else lives on the Lua stack.
 */
#include "lua_codec.h"

#include <lauxlib.h>

#include "ddb_text.h"

/* Free Lua stack slots made sure of when a table is opened: the table, a
 * key, a value, and what building a value needs (a tide.number takes 3, a
 * binary's luaL_Buffer up to about LUA_MINSTACK / 2). */
#define SLOTS_PER_LEVEL 24

/* The visitor's ud is the lua_State of the codec function that runs the
 * decoder: its upvalues hold the metatables. */

static const char *v_open(void *ud, enum tide_ddb_container c, size_t hint)
{
    lua_State *L = ud;
    static const char KINDS[][3] = {"SS", "NS", "BS"};
    if (!lua_checkstack(L, SLOTS_PER_LEVEL))
        return "Lua stack exhausted";
    switch (c) {
    case TIDE_DDB_OBJECT:
        lua_createtable(L, 0, (int)hint);            // [t]
        break;
    case TIDE_DDB_ARRAY:
        lua_createtable(L, (int)hint, 0);            // [t]
        lua_pushvalue(L, lua_upvalueindex(UV_LIST)); // [t, mt]
        lua_setmetatable(L, -2);                     // [t]
        break;
    default:
        lua_createtable(L, (int)hint, 1);            // [set]
        lua_pushliteral(L, "kind");                  // [set, "kind"]
        lua_pushlstring(L, KINDS[c - TIDE_DDB_SET_S], 2); // [set, "kind", kind]
        lua_rawset(L, -3);                           // [set]
        break;
    }
    return NULL;
}

static void v_close(void *ud, enum tide_ddb_container c)
{
    lua_State *L = ud;
    if (c >= TIDE_DDB_SET_S) {
        lua_pushvalue(L, lua_upvalueindex(UV_SET)); // [set, mt]
        lua_setmetatable(L, -2);                    // [set]
    }
}

static void v_string(void *ud, const char *s, size_t n)
{
    lua_pushlstring(ud, s, n);
}

static void v_number(void *ud, double x)
{
    lua_pushnumber(ud, x);
}

/* An N beyond a double: a tide.number. // [n] */
static void v_big_number(void *ud, const char *text, size_t n)
{
    lua_State *L = ud;
    lua_pushlstring(L, text, n);            // [text]
    tide_codec_wrap(L, "value", UV_NUMBER); // [n]
}

/* A core.binary of the base64 text: // [b], or [] and false. */
static bool v_binary(void *ud, const char *s, size_t len)
{
    lua_State *L = ud;
    /* Decode straight into Lua's buffer, in whole base64 groups. */
    luaL_Buffer buf;
    luaL_buffinit(L, &buf);
    const size_t chunk = LUAL_BUFFERSIZE / 3 * 4;
    for (size_t off = 0; off < len; off += chunk) {
        size_t k = len - off < chunk ? len - off : chunk;
        long r = tide_ddb_base64_decode(s + off, k, (unsigned char *)luaL_prepbuffer(&buf));
        if (r < 0) {
            luaL_pushresult(&buf);
            lua_pop(L, 1);       // []
            return false;
        }
        luaL_addsize(&buf, (size_t)r);
    }
    luaL_pushresult(&buf);                  // [bytes]
    tide_codec_wrap(L, "bytes", UV_BINARY); // [b]
    return true;
}

static void v_boolean(void *ud, bool b)
{
    lua_pushboolean(ud, b);
}

static void v_null(void *ud)
{
    lua_pushlightuserdata(ud, NULL); /* core.null */
}

static void v_store(void *ud, enum tide_ddb_into into, size_t index)
{
    if (into == TIDE_DDB_INTO_MEMBER)
        lua_rawset(ud, -3);              // [t, k, v] -> [t]
    else
        lua_rawseti(ud, -2, (int)index); // [t, v] -> [t]
}

static void v_drop(void *ud)
{
    lua_pop((lua_State *)ud, 1);
}

static const struct tide_ddb_visitor LUA_VISITOR = {
    .open = v_open,
    .close = v_close,
    .key = v_string,
    .string = v_string,
    .number = v_number,
    .big_number = v_big_number,
    .binary = v_binary,
    .boolean = v_boolean,
    .null = v_null,
    .store = v_store,
    .drop = v_drop,
};

/* ---- the calls ------------------------------------------------------------------ */

/* Shared body of decode_response and decode_value; frame is theirs
 * (TIDE_CODEC_FRAME). */
static int decode(lua_State *L, const char *root, bool prefix, enum tide_ddb_mode mode,
                  uintptr_t frame)
{
    if (lua_type(L, 1) != LUA_TSTRING)
        return luaL_typerror(L, 1, "string");
    size_t len;
    const char *text = lua_tolstring(L, 1, &len);
    lua_settop(L, 1);
    struct guard *g = tide_codec_guard_acquire(L, lua_upvalueindex(UV_GUARD), frame);
                                    // [text, guard]
    struct tide_ddb_decoder *d = tide_codec_guard_decoder(g, false);
    struct tide_error err;
    int rc = d == NULL ? tide_error_set(&err, TIDE_ENOMEM, "out of memory while parsing JSON")
                       : tide_ddb_decode(d, text, len, mode, root, prefix, &LUA_VISITOR, L, &err);
    tide_codec_guard_done(g);       // [text, guard, result?]
    if (rc < 0) {
        lua_settop(L, 2);
        return tide_codec_push_fail(L, err.message);
    }
    return 1;
}

int tide_codec_decode_nested(lua_State *L, struct guard *g, const char *text, size_t len, bool av)
{
    struct tide_ddb_decoder *d = tide_codec_guard_decoder(g, true);
    if (d == NULL)
        return 0;
    int top = lua_gettop(L);
    struct tide_error err;
    int rc = tide_ddb_decode(d, text, len, av ? TIDE_DDB_MODE_AV : TIDE_DDB_MODE_JSON, "value",
                             true, &LUA_VISITOR, L, &err);
    if (rc < 0 || lua_gettop(L) != top + 1) {
        lua_settop(L, top);
        return 0;
    }
    return 1;
}

int tide_codec_decode_response(lua_State *L)
{
    return decode(L, "response", false, TIDE_DDB_MODE_PLAIN, TIDE_CODEC_FRAME());
}

int tide_codec_decode_value(lua_State *L)
{
    return decode(L, "value", true, TIDE_DDB_MODE_AV, TIDE_CODEC_FRAME());
}

int tide_codec_decode_json(lua_State *L)
{
    return decode(L, "value", true, TIDE_DDB_MODE_JSON_EXACT, TIDE_CODEC_FRAME());
}
