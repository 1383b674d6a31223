/*
 * lua_input.c - core.decode_input: the JSON tide takes in from outside (a
 * line of `tide batch`, an HTTP API body) to Lua values, in one pass.
 *
 *   core.decode_input(text) -> value
 *                            | nil, message, offset
 *                            | nil
 *
 * yajl reads the text with the rules of tide_json_check (input_check.h:
 * strict RFC 8259, strings valid UTF-8, no NUL byte, numbers in range) and
 * its callbacks build the values as they come. When the text breaks a rule
 * the call returns tide_json_check's message and the 0-based byte offset
 * where the text stops being JSON (lua/tide/input.lua turns it into a line
 * and column).
 *
 * The values are lua-cjson's (the decoder input.lua used before:
 * cjson.safe, invalid numbers refused), which the rest of tide and user
 * handlers were written against: objects and arrays are plain tables (no
 * metatable, built by rawset and rawseti in the order of the text, so even
 * pairs() visits them in the same order), null is the light userdata NULL
 * (cjson.null, core.null), numbers are doubles as strtod reads them,
 * duplicate keys keep the last value.
 *
 * On a few texts that yajl takes, lua-cjson says otherwise: a \u escape of
 * half a surrogate pair without the other half (yajl writes '?' or joins
 * it with any escape that follows), \v or \f between tokens (whitespace to
 * yajl only) and nesting deeper than 1000 levels (lua-cjson's
 * decode_max_depth), and a string left open after the value ("5 \"x": yajl
 * waits for its end, which never comes, and reports no trailing garbage).
 * For those the call returns a lone nil: the caller
 * asks lua-cjson, whose message (as before) is the answer.
 *
 * Resources: the parser is owned by the codec's guard (lua_codec.h) and
 * allocates from its arena, so a Lua error raised by a callback (out of
 * memory, a failing finalizer) cannot leak it; the tables being filled sit
 * on the Lua stack, each object's current key right above its table.
 */
#include "lua_codec.h"
#include "lua_core.h"

#include <errno.h>
#include <lauxlib.h>
#include <stdbool.h>
#include <string.h>

#include "input_check.h"

/* lua-cjson's default decode_max_depth: objects and arrays open at once. */
#define INPUT_MAX_DEPTH 1000

struct input {
    lua_State *L;
    const char *text;
    size_t len;
    yajl_handle h;
    int depth;   /* objects and arrays open */
    bool cjson;  /* lua-cjson must read the text: nothing more is built */
    size_t end;  /* where the text's value ends, once read */
    /* per open container (from 1): an array's items so far, -1 for an object */
    int items[INPUT_MAX_DEPTH + 1];
};

/* Stores the value on top into the innermost open container, if any:
 * // [.., t, k, v] -> [.., t] or [.., t, v] -> [.., t] */
static void put(struct input *in)
{
    if (in->depth == 0) {
        /* the text's value, left on top; yajl is just past it, or at 0
         * for a number that ended the text (see minus_zero) */
        size_t at = yajl_get_bytes_consumed(in->h);
        in->end = at == 0 ? in->len : at;
        return;
    }
    int *n = &in->items[in->depth];
    if (*n < 0)
        lua_rawset(in->L, -3);
    else
        lua_rawseti(in->L, -2, ++*n);
}

static int on_null(void *ud)
{
    struct input *in = ud;
    if (!in->cjson) {
        lua_pushlightuserdata(in->L, NULL); /* cjson.null */
        put(in);
    }
    return 1;
}

static int on_boolean(void *ud, int b)
{
    struct input *in = ud;
    if (!in->cjson) {
        lua_pushboolean(in->L, b);
        put(in);
    }
    return 1;
}

/* The integer yajl read as 0 was written -0 (strtod's -0.0). The token
 * ends where yajl is (yajl_get_bytes_consumed: it reads one byte past a
 * number, then steps back); at 0, the number ended the text and yajl read
 * it when the parse completed (yajl_complete_parse parses a blank of its
 * own), so the text is that number alone, with blanks before it. */
static bool minus_zero(const struct input *in)
{
    size_t at = yajl_get_bytes_consumed(in->h);
    if (at == 0)
        return memchr(in->text, '-', in->len) != NULL;
    return at >= 2 && at <= in->len && in->text[at - 2] == '-';
}

static int on_integer(void *ud, long long v)
{
    struct input *in = ud;
    if (!in->cjson) {
        /* an integer of up to 64 bits rounded to a double once, as strtod
         * rounds its digits */
        lua_pushnumber(in->L, v == 0 && minus_zero(in) ? -0.0 : (double)v);
        put(in);
    }
    return 1;
}

static int on_double(void *ud, double x)
{
    struct input *in = ud;
    if (!in->cjson) {
        lua_pushnumber(in->L, x); /* strtod's, by yajl */
        put(in);
    }
    return 1;
}

static int on_string(void *ud, const unsigned char *s, size_t n)
{
    struct input *in = ud;
    if (!in->cjson) {
        lua_pushlstring(in->L, (const char *)s, n);
        put(in);
    }
    return 1;
}

static int on_key(void *ud, const unsigned char *s, size_t n)
{
    struct input *in = ud;
    if (!in->cjson)
        lua_pushlstring(in->L, (const char *)s, n); // [.., t, k]
    return 1;
}

/* items: 0 for an array, -1 for an object. // [..] -> [.., t] */
static int open_container(struct input *in, int items)
{
    if (in->cjson)
        return 1;
    /* the table, a key and a value */
    if (in->depth == INPUT_MAX_DEPTH || !lua_checkstack(in->L, 4)) {
        in->cjson = true; /* lua-cjson says how deep is too deep */
        return 1;
    }
    lua_createtable(in->L, 0, 0); /* as lua-cjson: the same table layout */
    in->items[++in->depth] = items;
    return 1;
}

static int on_start_map(void *ud)
{
    return open_container(ud, -1);
}

static int on_start_array(void *ud)
{
    return open_container(ud, 0);
}

static int on_end(void *ud)
{
    struct input *in = ud;
    if (!in->cjson) {
        in->depth--;
        put(in);
    }
    return 1;
}

static const yajl_callbacks CALLBACKS = {
    .yajl_null = on_null,
    .yajl_boolean = on_boolean,
    /* not yajl_number: yajl checks the numbers' range only for these two */
    .yajl_integer = on_integer,
    .yajl_double = on_double,
    .yajl_string = on_string,
    .yajl_start_map = on_start_map,
    .yajl_map_key = on_key,
    .yajl_end_map = on_end,
    .yajl_start_array = on_start_array,
    .yajl_end_array = on_end,
};

static unsigned hex4(const char *p)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = (unsigned char)p[i];
        v = v << 4 | (c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    return v;
}

/* True when s[0..n) is whitespace to both yajl and lua-cjson. */
static bool blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\n' && s[i] != '\r' && s[i] != '\t')
            return false;
    return true;
}

/* True when lua-cjson reads s[0..n), JSON that yajl took, otherwise than
 * yajl did (see the top of the file). s is a Lua string (a NUL after its
 * end) with no NUL inside (yajl refuses them); as the text is JSON, every
 * backslash in it starts an escape inside a string, and a \u escape has
 * its four hex digits. */
static bool cjson_reads_otherwise(const char *s, size_t n)
{
    static const char SPECIAL[] = "\\\v\f";
    const char *p = s + strcspn(s, SPECIAL), *end = s + n;
    while (p < end) {
        if (*p != '\\')
            return true; /* \v or \f: between tokens (yajl refuses them in strings) */
        if (p[1] != 'u') {
            p += 2;
        } else {
            unsigned cp = hex4(p + 2);
            if (cp >= 0xD800 && cp <= 0xDFFF) {
                /* lua-cjson: a high half, then \u and a low half */
                if (cp >= 0xDC00 || p[6] != '\\' || p[7] != 'u')
                    return true;
                unsigned lo = hex4(p + 8);
                if (lo < 0xDC00 || lo > 0xDFFF)
                    return true;
                p += 12;
            } else {
                p += 6;
            }
        }
        p += strcspn(p, SPECIAL);
    }
    return false;
}

/* core.decode_input(text): see the top of the file. */
static int l_decode_input(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TSTRING)
        return luaL_typerror(L, 1, "string");
    size_t len;
    const char *text = lua_tolstring(L, 1, &len);
    lua_settop(L, 1);
    struct guard *g = tide_codec_guard_acquire(L, lua_upvalueindex(1), TIDE_CODEC_FRAME());
                                                     // [text, guard]
    struct input in;
    in.L = L, in.text = text, in.len = len, in.depth = 0, in.cjson = false, in.end = 0;
    in.h = g->input = yajl_alloc(&CALLBACKS, &g->arena.afs, &in);
    if (in.h == NULL) {
        tide_codec_guard_done(g);
        return luaL_error(L, "decode_input: out of memory");
    }
    struct tide_error err;
    size_t at = 0;
    /* yajl tells an integer's overflow by errno, which it does not clear */
    errno = 0;
    int rc = tide_json_parse(in.h, text, len, &at, &err); // [text, guard, value?]
    tide_codec_guard_done(g);
    if (rc < 0) {
        lua_settop(L, 2);
        lua_pushnil(L);
        lua_pushstring(L, err.message);
        lua_pushnumber(L, (lua_Number)at);
        return 3;
    }
    if (in.cjson || !blank(text + in.end, len - in.end) || cjson_reads_otherwise(text, len)) {
        lua_settop(L, 2);
        lua_pushnil(L);
        return 1;
    }
    return 1;
}

void tide_lua_open_input(lua_State *L)
{
    tide_codec_guard_push_shared(L);           // [core, guard]
    lua_pushcclosure(L, l_decode_input, 1);    // [core, fn]
    lua_setfield(L, -2, "decode_input");       // [core]
}
