/*
 * lua_json.c - core.json_encode: plain JSON text for the CLI's output and
 * logs, lossless for tide's values.
 *
 * lua-cjson rounds numbers to 14 significant digits and knows nothing of
 * tide.number, core.list or core.binary; a generic JSON library cannot
 * write a number it cannot hold in a double. This serializer writes
 * integers exactly, other doubles in their shortest round-trip form, a
 * tide.number as its decimal text, object keys sorted (stable output),
 * and follows the codec's conventions: core.null is null, a table marked
 * with core.list is an array even when empty, an empty plain table is {}.
 * Parsing is elsewhere: the codec's decoder on yajl, core.decode_input
 * (lua_input.c, on yajl) for tide's input, lua-cjson for the rest.
 */
#include "lua_codec.h"
#include "lua_core.h"
#include "ddb_json_writer.h"
#include "input_check.h"

#include <lauxlib.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 100

/* The output grows in the codec's JSON buffer (ddb_json_writer.h), owned
 * by the codec's guard (lua_codec.h: shared by the calls of a Lua state,
 * with a __gc) so that a Lua error raised mid-way cannot leak it; a
 * luaL_Buffer cannot be used because the walk pushes and pops values.
 * Running out of memory sets the buffer's oom flag, checked at the end. */
struct out {
    struct tide_json_buf *b;
    lua_State *L;
    int depth;
    const char *error; /* static message, or NULL */
};

/* Upvalues of json_encode: the codec's metatables, then the guard. */
enum { JV_LIST = 1, JV_SET, JV_BINARY, JV_NUMBER, JV_GUARD, JV_COUNT = JV_GUARD };

static void add_char(struct out *o, char c) { tide_json_addc(o->b, c); }
static void add_str(struct out *o, const char *s) { tide_json_add(o->b, s, strlen(s)); }

/* Strings are escaped as the codec escapes them (jansson's compact form,
 * which request bodies have always had). Output is always JSON: a byte
 * that is not part of valid UTF-8 (binary a handler put in a string, bytes
 * read back from an old store) is written as U+FFFD, never raw. */
static void put_string(struct out *o, const char *s, size_t len)
{
    size_t bad = 0;
    if (tide_utf8_check(s, len, &bad) == 0) {
        tide_json_add_string(o->b, s, len);
        return;
    }
    char *clean = len <= (SIZE_MAX - 1) / 3 ? malloc(len * 3 + 1) : NULL;
    if (clean == NULL) {
        o->b->oom = 1;
        return;
    }
    size_t n = 0, i = 0;
    while (i < len) {
        memcpy(clean + n, s + i, bad);
        n += bad, i += bad;
        if (i >= len)
            break;
        memcpy(clean + n, "\xEF\xBF\xBD", 3);
        n += 3, i++;
        if (tide_utf8_check(s + i, len - i, &bad) == 0)
            bad = len - i;
    }
    tide_json_add_string(o->b, clean, n);
    free(clean);
}

static void put_number(struct out *o, double x)
{
    char buf[32];
    if (x == floor(x) && fabs(x) < 1e17) {
        /* integer formatting by hand: versions, timestamps and amounts are
         * integers, and snprintf's format parsing cost more than the digits */
        if (x == 0 && signbit(x)) {
            add_str(o, "-0");
            return;
        }
        long long v = (long long)x;
        unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
        char *end = buf + sizeof(buf), *p = end;
        do {
            *--p = (char)('0' + u % 10);
            u /= 10;
        } while (u);
        if (v < 0)
            *--p = '-';
        tide_json_add(o->b, p, (size_t)(end - p));
        return;
    }
    /* shortest of %.15g..%.17g that reads back as the same double */
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof(buf), "%.*g", prec, x);
        if (strtod(buf, NULL) == x)
            break;
    }
    add_str(o, buf);
}

/* 1 when the table at idx has the metatable of upvalue uv. */
static int has_mt(lua_State *L, int idx, int uv)
{
    if (!lua_getmetatable(L, idx))
        return 0;
    int same = lua_rawequal(L, -1, lua_upvalueindex(uv));
    lua_pop(L, 1);
    return same;
}

/* Number of array elements when the table is a sequence 1..n, else -1. */
static long sequence_length(lua_State *L, int idx)
{
    long n = 0, max = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) { // [.., k, v]
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TNUMBER) {
            lua_pop(L, 1);
            return -1;
        }
        double k = lua_tonumber(L, -1);
        if (k < 1 || k != floor(k)) {
            lua_pop(L, 1);
            return -1;
        }
        n++;
        if (k > max)
            max = (long)k;
    }
    return n == max ? n : -1;
}

static int put_value(struct out *o, int idx);

static int key_cmp(const void *a, const void *b)
{
    const char *const *x = a, *const *y = b;
    return strcmp(*x, *y);
}

/* Flat objects (no table among their values) of up to SMALL_OBJECT keys:
 * an event's data and metadata, nearly every command's. They keep their
 * keys and values on the Lua stack while they are written, sorted by an
 * insertion sort over a C array: no table of keys, no userdata, no lookup
 * of each value again by its name. Others take the general path below. */
#define SMALL_OBJECT 24

struct key_ref {
    const char *s;
    size_t len;
    int value; /* stack index of the value */
};

static int key_less(const struct key_ref *a, const struct key_ref *b)
{
    /* byte order, as strcmp (and the general path) sorts; a loop, not
     * memcmp: keys are short, and the call cost more than the compare */
    size_t n = a->len < b->len ? a->len : b->len;
    const unsigned char *x = (const unsigned char *)a->s, *y = (const unsigned char *)b->s;
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i])
            return x[i] < y[i];
    return a->len < b->len;
}

/* 1 when written, 0 when the table is not for this path (nothing written,
 * the stack as it was), -1 on error. */
static int put_small_object(struct out *o, int idx)
{
    lua_State *L = o->L;
    if (!lua_checkstack(L, 2 * SMALL_OBJECT + 4))
        return 0;
    int base = lua_gettop(L);
    struct key_ref keys[SMALL_OBJECT];
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) { // [.., k1, v1, ..., k, v]
        if (lua_type(L, -2) != LUA_TSTRING) {
            lua_settop(L, base);
            o->error = "a table with both string and other keys cannot be written as JSON";
            return -1;
        }
        if (n == SMALL_OBJECT || lua_type(L, -1) == LUA_TTABLE) {
            lua_settop(L, base);
            return 0;
        }
        /* the key string is the table's own (anchored by it) */
        struct key_ref k = {.value = lua_gettop(L)};
        k.s = lua_tolstring(L, -2, &k.len);
        int i = n++;
        while (i > 0 && key_less(&k, &keys[i - 1])) {
            keys[i] = keys[i - 1];
            i--;
        }
        keys[i] = k;
        lua_pushvalue(L, -2); // [.., k, v, k]: lua_next goes on from the copy
    }
    add_char(o, '{');
    for (int i = 0; i < n; i++) {
        if (i)
            add_char(o, ',');
        put_string(o, keys[i].s, keys[i].len);
        add_char(o, ':');
        if (put_value(o, keys[i].value) < 0) {
            lua_settop(L, base);
            return -1;
        }
    }
    add_char(o, '}');
    lua_settop(L, base);
    return 1;
}

static int put_object(struct out *o, int idx)
{
    int small = put_small_object(o, idx);
    if (small != 0)
        return small < 0 ? -1 : 0;
    lua_State *L = o->L;
    /* Collect the keys in a Lua array (so they stay anchored), sort them by
     * byte order with qsort over their C strings. */
    lua_newtable(L); // [.., keys]
    int keys = lua_gettop(L);
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) {
            lua_pop(L, 2);
            o->error = "a table with both string and other keys cannot be written as JSON";
            return -1;
        }
        lua_pushvalue(L, -1);
        lua_rawseti(L, keys, ++n);
    }
    const char **names = n ? lua_newuserdata(L, sizeof(char *) * (size_t)n) : NULL;
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, keys, i);
        names[i - 1] = lua_tostring(L, -1); /* anchored by keys */
        lua_pop(L, 1);
    }
    if (n)
        qsort(names, (size_t)n, sizeof(char *), key_cmp);
    add_char(o, '{');
    for (int i = 0; i < n; i++) {
        if (i)
            add_char(o, ',');
        put_string(o, names[i], strlen(names[i]));
        add_char(o, ':');
        lua_getfield(L, idx, names[i]);
        if (put_value(o, lua_gettop(L)) < 0)
            return -1;
        lua_pop(L, 1);
    }
    add_char(o, '}');
    lua_settop(L, keys - 1);
    return 0;
}

static int put_array(struct out *o, int idx, long n)
{
    add_char(o, '[');
    for (long i = 1; i <= n; i++) {
        if (i > 1)
            add_char(o, ',');
        lua_rawgeti(o->L, idx, (int)i);
        if (put_value(o, lua_gettop(o->L)) < 0)
            return -1;
        lua_pop(o->L, 1);
    }
    add_char(o, ']');
    return 0;
}

static int put_value(struct out *o, int idx)
{
    lua_State *L = o->L;
    /* luaL_Buffer keeps pieces on the stack: make room for our own work. */
    if (!lua_checkstack(L, 8)) {
        o->error = "out of Lua stack";
        return -1;
    }
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        add_str(o, "null");
        return 0;
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) {
            add_str(o, "null");
            return 0;
        }
        break;
    case LUA_TBOOLEAN:
        add_str(o, lua_toboolean(L, idx) ? "true" : "false");
        return 0;
    case LUA_TNUMBER: {
        double x = lua_tonumber(L, idx);
        if (!isfinite(x)) {
            o->error = "NaN and infinity cannot be written as JSON";
            return -1;
        }
        put_number(o, x);
        return 0;
    }
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        put_string(o, s, len);
        return 0;
    }
    case LUA_TTABLE: {
        if (++o->depth > JSON_MAX_DEPTH) {
            o->error = "tables nested more than 100 deep (or a cycle) cannot be written as JSON";
            return -1;
        }
        int rc;
        if (has_mt(L, idx, JV_NUMBER)) {
            lua_getfield(L, idx, "value");
            add_str(o, lua_tostring(L, -1) ? lua_tostring(L, -1) : "null");
            lua_pop(L, 1);
            rc = 0;
        } else if (has_mt(L, idx, JV_BINARY) || has_mt(L, idx, JV_SET)) {
            o->error = "binary values and sets have no plain JSON form";
            rc = -1;
        } else if (has_mt(L, idx, JV_LIST)) {
            rc = put_array(o, idx, (long)lua_objlen(L, idx));
        } else {
            long n = sequence_length(L, idx);
            rc = n > 0 ? put_array(o, idx, n) : put_object(o, idx);
        }
        o->depth--;
        return rc;
    }
    default:
        break;
    }
    o->error = "functions, userdata and threads cannot be written as JSON";
    return -1;
}

/* core.json_encode(v) -> text | nil, err */
static int l_json_encode(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    struct guard *g = tide_codec_guard_acquire(L, lua_upvalueindex(JV_GUARD), TIDE_CODEC_FRAME());
    struct out o = {.b = &g->out, .L = L, .depth = 0, .error = NULL}; // [v, guard]
    int rc = put_value(&o, 1);
    lua_settop(L, 2);
    if (rc < 0 || g->out.oom) {
        tide_codec_guard_done(g);
        lua_pushnil(L);
        lua_pushfstring(L, "json_encode: %s", o.error ? o.error : "out of memory");
        return 2;
    }
    lua_pushlstring(L, g->out.p ? g->out.p : "", g->out.len); // [v, guard, text]
    tide_codec_guard_done(g);
    return 1;
}

void tide_lua_open_json(lua_State *L)
{
    /* the codec's metatables (created here if the codec is not open yet) */
    static const char *const mts[] = {"tide.list", "tide.set", "tide.binary", "tide.number"};
    for (size_t i = 0; i < sizeof(mts) / sizeof(mts[0]); i++)
        luaL_newmetatable(L, mts[i]);       // [core, mts...]
    tide_codec_guard_push_shared(L);        // [core, mts..., guard]
    lua_pushcclosure(L, l_json_encode, JV_COUNT); // [core, fn]
    lua_setfield(L, -2, "json_encode");
}
