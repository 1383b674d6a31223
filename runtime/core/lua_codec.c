/*
 * lua_codec.c - the Lua side of the DynamoDB JSON codec of tide.core
 * (conventions: docs/codec.md): the guard that owns each call's C
 * resources, request bodies as buffers, the value constructors (core.list,
 * set, binary, number) and their metamethods, and the module table.
 *
 * The codec itself is pure C (ddb_*.c, no Lua); the other binding files
 * connect it to Lua values: lua_encode.c (encode_*, item_size),
 * lua_decode.c (decode_*), lua_stream_records.c (decode_stream_records).
 * lua_codec.h is what they share.
 */
#include "lua_codec.h"
#include "lua_core.h"

#include <lauxlib.h>

#include <stdlib.h>
#include <string.h>

#include "ddb_limits.h"
#include "ddb_number.h"
#include "error.h"

/* ---- the guard: owns the C resources of one call ------------------------ */

/* Closes the parsers of the call that held g and empties the arena. */
static void close_parsers(struct guard *g)
{
    if (g->dec != NULL)
        tide_ddb_decoder_close(g->dec);
    if (g->nested != NULL)
        tide_ddb_decoder_close(g->nested);
    tide_ddb_records_reader_close(&g->records);
    if (g->input != NULL)
        yajl_free(g->input);
    g->input = NULL;
    tide_json_arena_reset(&g->arena);
}

static void free_buf(struct tide_json_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* Frees what g holds (idempotent): the __gc of every guard. */
static void guard_release(struct guard *g)
{
    close_parsers(g);
    free_buf(&g->out);
    free_buf(&g->scratch);
    tide_ddb_records_reader_free(&g->records);
    free(g->dec);
    free(g->nested);
    g->dec = g->nested = NULL;
}

void tide_codec_guard_done(struct guard *g)
{
    close_parsers(g);
    if (!g->shared) {
        guard_release(g);
    } else {
        if (g->out.cap > GUARD_KEEP_OUT || g->out.oom)
            free_buf(&g->out);
        if (g->scratch.cap > GUARD_KEEP_OUT || g->scratch.oom)
            free_buf(&g->scratch);
        if (g->records.tokens_cap > GUARD_KEEP_TOKENS)
            tide_ddb_records_reader_free(&g->records);
    }
    g->out.len = 0;
    g->in_use = 0;
}

struct tide_ddb_decoder *tide_codec_guard_decoder(struct guard *g, bool nested)
{
    struct tide_ddb_decoder **d = nested ? &g->nested : &g->dec;
    if (*d == NULL) {
        *d = malloc(sizeof(**d));
        if (*d != NULL)
            tide_ddb_decoder_init(*d, &g->arena.afs, nested);
    }
    return *d;
}

static int guard_gc(lua_State *L)
{
    struct guard *g = lua_touserdata(L, 1);
    if (g != NULL) {
        guard_release(g);
        /* the userdata's memory goes back to LuaJIT's allocator */
        tide_json_arena_finish(&g->arena);
    }
    return 0;
}

static const char GUARD_MT[] = "tide.codec_guard";
static const char SHARED_GUARD_KEY = 0; /* its address: the registry key */

/* Pushes a new guard with the guard metatable: // [..] -> [.., guard] */
static struct guard *guard_new(lua_State *L, int shared)
{
    struct guard *g = lua_newuserdata(L, sizeof(*g));
    memset(g, 0, offsetof(struct guard, arena));
    tide_ddb_records_reader_init(&g->records, &g->arena.afs);
    tide_json_arena_init(&g->arena);
    g->shared = (unsigned char)shared;
    if (luaL_newmetatable(L, GUARD_MT)) { // [.., guard, mt]
        lua_pushcfunction(L, guard_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);              // [.., guard]
    return g;
}

void tide_codec_guard_push_shared(lua_State *L)
{
    lua_pushlightuserdata(L, (void *)&SHARED_GUARD_KEY);
    lua_rawget(L, LUA_REGISTRYINDEX);     // [.., guard?]
    if (lua_isuserdata(L, -1))
        return;
    lua_pop(L, 1);
    guard_new(L, 1);                      // [.., guard]
    lua_pushlightuserdata(L, (void *)&SHARED_GUARD_KEY);
    lua_pushvalue(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);     // [.., guard]
}

struct guard *tide_codec_guard_acquire(lua_State *L, int shared, uintptr_t frame)
{
    struct guard *g = lua_touserdata(L, shared);
    if (g->in_use) {
        if (frame < g->frame) { /* maybe nested in the holder: see lua_codec.h */
            struct guard *fresh = guard_new(L, 0);
            memcpy(fresh->mt, g->mt, sizeof(g->mt));
            return fresh;
        }
        /* the holder was unwound by a Lua error: free what it left */
        close_parsers(g);
        g->out.oom = false;
        g->scratch.oom = false;
    }
    g->in_use = 1;
    g->frame = frame;
    g->out.len = 0;
    lua_pushvalue(L, shared);             // [.., guard]
    return g;
}

int tide_codec_push_fail(lua_State *L, const char *msg)
{
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

/* ---- request bodies as buffers (lua_buffer.h) ------------------------------ */

/* core.is_buffer(v) -> true when v came from encode_request_buffer */
static int l_is_buffer(lua_State *L)
{
    size_t len;
    lua_pushboolean(L, tide_codec_tobuffer(L, 1, &len) != NULL);
    return 1;
}

/* #buf: its length in bytes */
static int buffer_len(lua_State *L)
{
    size_t len = 0;
    if (tide_codec_tobuffer(L, 1, &len) == NULL)
        return luaL_typerror(L, 1, TIDE_BUFFER_MT);
    lua_pushnumber(L, (lua_Number)len);
    return 1;
}

/* tostring(buf): its bytes as a Lua string */
static int buffer_tostring(lua_State *L)
{
    size_t len = 0;
    const char *p = tide_codec_tobuffer(L, 1, &len);
    if (p == NULL)
        return luaL_typerror(L, 1, TIDE_BUFFER_MT);
    lua_pushlstring(L, p, len);
    return 1;
}

/* ---- value constructors and predicates ----------------------------------- */

static int has_mt(lua_State *L, int idx, int uv)
{
    if (!lua_istable(L, idx) || !lua_getmetatable(L, idx)) // [mt]
        return 0;
    int same = lua_rawequal(L, -1, lua_upvalueindex(uv));
    lua_pop(L, 1);                 // []
    return same;
}

/* core.is_list(v), is_set, is_binary, is_number: v carries the metatable
 * of upvalue uv. */
static int is_marked(lua_State *L, int uv)
{
    lua_pushboolean(L, has_mt(L, 1, uv));
    return 1;
}

static int l_is_list(lua_State *L) { return is_marked(L, UV_LIST); }
static int l_is_set(lua_State *L) { return is_marked(L, UV_SET); }
static int l_is_binary(lua_State *L) { return is_marked(L, UV_BINARY); }
static int l_is_number(lua_State *L) { return is_marked(L, UV_NUMBER); }

void tide_codec_wrap(lua_State *L, const char *field, int uv)
{
    lua_createtable(L, 0, 1);               // [.., v, t]
    lua_insert(L, -2);                      // [.., t, v]
    lua_setfield(L, -2, field);             // [.., t]
    lua_pushvalue(L, lua_upvalueindex(uv)); // [.., t, mt]
    lua_setmetatable(L, -2);                // [.., t]
}

/* core.list([t]) -> t marked as a list (a new empty one without t) */
static int l_list(lua_State *L)
{
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);                         // [t]
    } else {
        luaL_checktype(L, 1, LUA_TTABLE);
        lua_settop(L, 1);                        // [t]
    }
    lua_pushvalue(L, lua_upvalueindex(UV_LIST)); // [t, mt]
    lua_setmetatable(L, -2);                     // [t]
    return 1;
}


/* core.set(kind, [values]) -> a new set holding values[1..#values] */
static int l_set(lua_State *L)
{
    const char *kind = luaL_checkstring(L, 1);
    if (strcmp(kind, "SS") != 0 && strcmp(kind, "NS") != 0 && strcmp(kind, "BS") != 0)
        return luaL_argerror(L, 1, "\"SS\", \"NS\" or \"BS\" expected");
    if (!lua_isnoneornil(L, 2))
        luaL_checktype(L, 2, LUA_TTABLE);
    int n = lua_istable(L, 2) ? (int)lua_objlen(L, 2) : 0;
    lua_createtable(L, n, 1);                   // [.., set]
    lua_pushvalue(L, 1);                        // [.., set, kind]
    lua_setfield(L, -2, "kind");                // [.., set]
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, 2, i);                   // [.., set, v]
        lua_rawseti(L, -2, i);                  // [.., set]
    }
    lua_pushvalue(L, lua_upvalueindex(UV_SET)); // [.., set, mt]
    lua_setmetatable(L, -2);                    // [.., set]
    return 1;
}


/* core.binary(bytes) -> binary value */
static int l_binary(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TSTRING)
        return luaL_typerror(L, 1, "string");
    lua_settop(L, 1);                 // [bytes]
    tide_codec_wrap(L, "bytes", UV_BINARY); // [b]
    return 1;
}


/* core.bytes(b) -> the Lua string of a binary value (a string is returned
 * as it is) */
static int l_bytes(lua_State *L)
{
    if (lua_type(L, 1) == LUA_TSTRING) {
        lua_settop(L, 1);
        return 1;
    }
    if (!has_mt(L, 1, UV_BINARY))
        return luaL_typerror(L, 1, "core.binary value");
    lua_getfield(L, 1, "bytes");
    return 1;
}

/* core.number(text or number) -> tide.number, raising on invalid text */
static int l_number(lua_State *L)
{
    struct tide_ddb_number num;
    struct tide_error err;
    char buf[TIDE_DDB_NUMBER_BUFSIZE];
    int rc;

    switch (lua_type(L, 1)) {
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, 1, &len);
        rc = tide_ddb_number_parse(s, len, &num, &err);
        break;
    }
    case LUA_TNUMBER:
        rc = tide_ddb_number_from_double(lua_tonumber(L, 1), &num, &err);
        break;
    case LUA_TTABLE:
        if (has_mt(L, 1, UV_NUMBER)) {
            lua_settop(L, 1);
            return 1;
        }
        /* fall through */
    default:
        return luaL_typerror(L, 1, "string or number");
    }
    if (rc < 0)
        return luaL_error(L, "core.number: %s", err.message);
    lua_pushlstring(L, buf, tide_ddb_number_format(&num, buf)); // [.., text]
    tide_codec_wrap(L, "value", UV_NUMBER);        // [.., n]
    return 1;
}


/* ---- metamethods ----------------------------------------------------------- */

/* The string field f of the table at idx, or NULL. */
static const char *field_string(lua_State *L, int idx, const char *f, size_t *len)
{
    if (!lua_istable(L, idx))
        return NULL;
    lua_pushstring(L, f); // [k]
    lua_rawget(L, idx);   // [v]
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, len) : NULL;
    lua_pop(L, 1);        // [] (s is anchored by the table)
    return s;
}

/* tostring of a wrapper: its string field f, raising when there is none. */
static int wrapped_tostring(lua_State *L, const char *f, const char *what)
{
    size_t len;
    const char *s = field_string(L, 1, f, &len);
    if (s == NULL)
        return luaL_typerror(L, 1, what);
    lua_pushlstring(L, s, len);
    return 1;
}

static int binary_tostring(lua_State *L)
{
    return wrapped_tostring(L, "bytes", "core.binary value");
}

static int binary_eq(lua_State *L)
{
    size_t la, lb;
    const char *a = field_string(L, 1, "bytes", &la);
    const char *b = field_string(L, 2, "bytes", &lb);
    lua_pushboolean(L, a != NULL && b != NULL && la == lb && memcmp(a, b, la) == 0);
    return 1;
}

static void number_arg(lua_State *L, int idx, struct tide_ddb_number *num)
{
    struct tide_error err;
    size_t len;
    const char *s = field_string(L, idx, "value", &len);
    if (s == NULL)
        luaL_typerror(L, idx, "tide.number");
    if (tide_ddb_number_parse(s, len, num, &err) < 0)
        luaL_error(L, "tide.number: %s", err.message);
}

static int number_tostring(lua_State *L)
{
    return wrapped_tostring(L, "value", "tide.number");
}

static int number_compare(lua_State *L)
{
    struct tide_ddb_number a, b;
    number_arg(L, 1, &a);
    number_arg(L, 2, &b);
    return tide_ddb_number_compare(&a, &b);
}

static int number_eq(lua_State *L)
{
    lua_pushboolean(L, number_compare(L) == 0);
    return 1;
}

static int number_lt(lua_State *L)
{
    lua_pushboolean(L, number_compare(L) < 0);
    return 1;
}

static int number_le(lua_State *L)
{
    lua_pushboolean(L, number_compare(L) <= 0);
    return 1;
}

/* ---- module ----------------------------------------------------------------- */

/* Pushes the registry metatable name, creating it and setting methods. */
static void push_mt(lua_State *L, const char *name, const luaL_Reg *methods)
{
    luaL_newmetatable(L, name); // [mt]
    for (; methods != NULL && methods->name != NULL; methods++) {
        lua_pushcfunction(L, methods->func);
        lua_setfield(L, -2, methods->name);
    }
}

void tide_lua_open_codec(lua_State *L)
{
    static const luaL_Reg binary_methods[] = {
        {"__tostring", binary_tostring}, {"__eq", binary_eq}, {NULL, NULL}};
    static const luaL_Reg number_methods[] = {{"__tostring", number_tostring},
                                              {"__eq", number_eq},
                                              {"__lt", number_lt},
                                              {"__le", number_le},
                                              {NULL, NULL}};
    static const luaL_Reg funcs[] = {
        {"encode_request", tide_codec_encode_request},
        {"encode_request_buffer", tide_codec_encode_request_buffer},
        {"is_buffer", l_is_buffer},
        {"decode_response", tide_codec_decode_response},
        {"encode_value", tide_codec_encode_value},
        {"decode_value", tide_codec_decode_value},
        {"decode_json", tide_codec_decode_json},
        {"decode_stream_records", tide_codec_decode_stream_records},
        {"item_size", tide_codec_item_size},
        {"list", l_list},
        {"is_list", l_is_list},
        {"set", l_set},
        {"is_set", l_is_set},
        {"binary", l_binary},
        {"is_binary", l_is_binary},
        {"bytes", l_bytes},
        {"number", l_number},
        {"is_number", l_is_number},
        {NULL, NULL},
    };
    static const luaL_Reg buffer_methods[] = {
        {"__len", buffer_len}, {"__tostring", buffer_tostring}, {NULL, NULL}};
    push_mt(L, TIDE_BUFFER_MT, buffer_methods); // [core, buffer_mt]
    lua_pop(L, 1);                           // [core]
    int core = lua_gettop(L);                // [core]
    push_mt(L, "tide.list", NULL);
    push_mt(L, "tide.set", NULL);
    push_mt(L, "tide.binary", binary_methods);
    push_mt(L, "tide.number", number_methods);
    tide_codec_guard_push_shared(L);         // [core, list, set, binary, number, guard]
    struct guard *g = lua_touserdata(L, -1);
    for (int i = 0; i < UV_GUARD - 1; i++)
        g->mt[i] = lua_topointer(L, core + 1 + i);
    for (const luaL_Reg *f = funcs; f->name != NULL; f++) {
        for (int i = 1; i <= UV_COUNT; i++)
            lua_pushvalue(L, core + i);      // [core, mts..., mts...]
        lua_pushcclosure(L, f->func, UV_COUNT); // [core, mts..., fn]
        lua_setfield(L, core, f->name);      // [core, mts...]
    }
    lua_settop(L, core);                     // [core]

    /* Same value as cjson.null and ngx.null. */
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, core, "null");

    lua_createtable(L, 0, 8);                // [core, limits]
    static const struct {
        const char *name;
        lua_Number value;
    } limits[] = {
        {"item_bytes", TIDE_DDB_ITEM_BYTES},
        {"transact_items", TIDE_DDB_TRANSACT_ITEMS},
        {"transact_bytes", TIDE_DDB_TRANSACT_BYTES},
        {"batch_write_items", TIDE_DDB_BATCH_WRITE_ITEMS},
        {"batch_write_bytes", TIDE_DDB_BATCH_WRITE_BYTES},
        {"batch_get_keys", TIDE_DDB_BATCH_GET_KEYS},
        {"query_page_bytes", TIDE_DDB_QUERY_PAGE_BYTES},
        {"max_depth", TIDE_DDB_MAX_DEPTH},
    };
    for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
        lua_pushnumber(L, limits[i].value);
        lua_setfield(L, -2, limits[i].name);
    }
    lua_setfield(L, core, "limits");         // [core]
}
