/*
 * lua_encode.c - core.encode_request, encode_request_buffer, encode_value
 * and item_size: the walk over Lua values that drives the pure encoder
 * (ddb_encode.c, which applies DynamoDB's marshalling rules and writes the
 * text). What is Lua's is decided here: which tables are maps, lists,
 * sets, binary values or tide.numbers (by metatable and keys), and what a
 * table whose keys fit neither a map nor a list is said to be.
 */
#include "lua_codec.h"

#include <lauxlib.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ddb_encode.h"
#include "ddb_limits.h"

/* Lua stack slots one level of the walk may use. */
#define STACK_PER_LEVEL 6

struct walker {
    lua_State *L;
    struct tide_ddb_encoder *e;
    const void *list_mt, *set_mt, *binary_mt, *number_mt;
};

/* What a Lua value is, for the codec. */
enum ltype {
    LT_BAD,   /* error already set */
    LT_OTHER, /* function, userdata, thread, cdata, other lightuserdata */
    LT_STRING,
    LT_NUMBER,
    LT_BOOL,
    LT_NULL,
    LT_BINARY,
    LT_BIGNUM,
    LT_SET,
    LT_LIST,
    LT_MAP,
};

/* Checks the keys of the table at idx, which has no string key first:
 * exactly 1..n gives LT_LIST. Scans every key so that the message does not
 * depend on the traversal order. // [k, v] on entry, [] on success */
static enum ltype list_shape(struct walker *w, int idx, size_t *n)
{
    lua_State *L = w->L;
    size_t len = lua_objlen(L, idx), count = 0;
    const char *other = NULL;  /* type name of a key that is neither */
    char str[41] = "";         /* a string key */
    int has_str = 0, out_of_range = 0;
    double nonint = 0;
    int has_nonint = 0;

    do {
        int kt = lua_type(L, -2);
        if (kt == LUA_TNUMBER) {
            double k = lua_tonumber(L, -2);
            if (k != floor(k)) {
                has_nonint = 1;
                nonint = k;
            } else if (k < 1 || k > (double)len) {
                out_of_range = 1;
            } else {
                count++;
            }
        } else if (kt == LUA_TSTRING) {
            if (!has_str)
                snprintf(str, sizeof(str), "%s", lua_tostring(L, -2));
            has_str = 1;
        } else {
            other = luaL_typename(L, -2);
        }
        lua_pop(L, 1); // [k]
    } while (lua_next(L, idx));
    struct tide_ddb_encoder *e = w->e;
    if (other != NULL)
        tide_ddb_enc_fail(e, TIDE_EINVAL, "table has a %s key (map keys must be strings)", other);
    else if (has_str)
        tide_ddb_enc_fail(e, TIDE_EINVAL, "table mixes array items and string keys (\"%s\")", str);
    else if (has_nonint)
        tide_ddb_enc_fail(e, TIDE_EINVAL, "table has a non-integer key %.14g", nonint);
    else if (out_of_range || count != len)
        tide_ddb_enc_fail(e, TIDE_EINVAL, "array has holes (keys must be exactly 1..n)");
    else {
        *n = len;
        return LT_LIST;
    }
    return LT_BAD;
}

/* Classifies the value at idx (absolute). For LT_LIST, *n is its length.
 * Map keys are checked later, while walking. */
static enum ltype classify(struct walker *w, int idx, size_t *n)
{
    lua_State *L = w->L;
    int marked_list = 0;

    switch (lua_type(L, idx)) {
    case LUA_TSTRING: return LT_STRING;
    case LUA_TNUMBER: return LT_NUMBER;
    case LUA_TBOOLEAN: return LT_BOOL;
    case LUA_TLIGHTUSERDATA: return lua_touserdata(L, idx) == NULL ? LT_NULL : LT_OTHER;
    case LUA_TTABLE: break;
    default: return LT_OTHER;
    }
    if (lua_getmetatable(L, idx)) { // [mt]
        const void *mt = lua_topointer(L, -1);
        lua_pop(L, 1);              // []
        if (mt == w->binary_mt)
            return LT_BINARY;
        if (mt == w->number_mt)
            return LT_BIGNUM;
        if (mt == w->set_mt)
            return LT_SET;
        marked_list = mt == w->list_mt;
    }
    lua_pushnil(L);                 // [nil]
    if (!lua_next(L, idx)) {        // []
        *n = 0;
        return marked_list ? LT_LIST : LT_MAP;
    }
    if (lua_type(L, -2) == LUA_TSTRING) { // [k, v]
        if (marked_list) {
            tide_ddb_enc_fail(w->e, TIDE_EINVAL, "a core.list table has the string key \"%.40s\"",
                              lua_tostring(L, -2));
            return LT_BAD;
        }
        lua_pop(L, 2);              // []
        return LT_MAP;
    }
    return list_shape(w, idx, n);
}

/* The string field f of the wrapper table at idx (a binary value's bytes, a
 * tide.number's text), anchored by the table; else an error. */
static int wrapped_string(struct walker *w, int idx, const char *f, const char *what,
                          const char **p, size_t *len)
{
    lua_State *L = w->L;
    lua_pushstring(L, f); // [k]
    lua_rawget(L, idx);   // [s]
    if (lua_type(L, -1) != LUA_TSTRING) {
        lua_pop(L, 1);
        return tide_ddb_enc_fail(w->e, TIDE_EINVAL, "%s", what);
    }
    *p = lua_tolstring(L, -1, len);
    lua_pop(L, 1);        // []
    return 0;
}

static int walk(struct walker *w, int idx);

/* The members of the map at idx. */
static int walk_members(struct walker *w, int idx)
{
    lua_State *L = w->L;
    struct tide_ddb_encoder *e = w->e;
    lua_pushnil(L);                          // [nil]
    while (lua_next(L, idx)) {               // [k, v]
        int kt = lua_type(L, -2);
        if (kt != LUA_TSTRING) {
            if (kt == LUA_TNUMBER)
                return tide_ddb_enc_fail(e, TIDE_EINVAL,
                                         "table mixes array items and string keys ([%.14g])",
                                         lua_tonumber(L, -2));
            return tide_ddb_enc_fail(e, TIDE_EINVAL, "table has a %s key (map keys must be strings)",
                                     luaL_typename(L, -2));
        }
        size_t klen;
        const char *k = lua_tolstring(L, -2, &klen);
        int rc = tide_ddb_enc_key(e, k, klen);
        if (rc < 0 || (rc = walk(w, lua_gettop(L))) < 0)
            return rc;
        lua_pop(L, 1);                       // [k]
    }
    return 0;                                // []
}

/* Items 1..n of the list (or set) at idx. */
static int walk_items(struct walker *w, int idx, size_t n)
{
    lua_State *L = w->L;
    for (size_t i = 1; i <= n; i++) {
        int rc = tide_ddb_enc_item(w->e);
        if (rc < 0)
            return rc;
        lua_rawgeti(L, idx, (int)i); // [v]
        if ((rc = walk(w, lua_gettop(L))) < 0)
            return rc;
        lua_pop(L, 1);               // []
    }
    return 0;
}

/* The set at idx: its keys must be "kind" and exactly 1..n. */
static int walk_set(struct walker *w, int idx)
{
    lua_State *L = w->L;
    struct tide_ddb_encoder *e = w->e;
    size_t klen = 0;
    lua_pushliteral(L, "kind");                  // [k]
    lua_rawget(L, idx);                          // [kind]
    const char *kind = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &klen) : "";
    lua_pop(L, 1);                               // [] (kind anchored by the set)
    int rc = tide_ddb_enc_open_set(e, kind, klen, "table");
    if (rc < 0)
        return rc;
    size_t n = lua_objlen(L, idx), count = 0;
    lua_pushnil(L);                              // [nil]
    while (lua_next(L, idx)) {                   // [k, v]
        if (lua_type(L, -2) == LUA_TNUMBER) {
            double k = lua_tonumber(L, -2);
            if (k != floor(k) || k < 1 || k > (double)n)
                return tide_ddb_enc_fail(e, TIDE_EINVAL, "set has holes (members must be at 1..n)");
            count++;
        } else if (lua_type(L, -2) != LUA_TSTRING || strcmp(lua_tostring(L, -2), "kind") != 0) {
            return tide_ddb_enc_fail(e, TIDE_EINVAL, "set has a key other than kind and 1..n");
        }
        lua_pop(L, 1);                           // [k]
    }
    if (count != n)
        return tide_ddb_enc_fail(e, TIDE_EINVAL, "set has holes (members must be at 1..n)");
    if ((rc = walk_items(w, idx, n)) < 0)
        return rc;
    return tide_ddb_enc_close(e);
}

/* The value at idx (absolute). */
static int walk(struct walker *w, int idx)
{
    lua_State *L = w->L;
    struct tide_ddb_encoder *e = w->e;
    struct tide_ddb_scalar v;
    size_t n = 0;
    int rc;
    v.type_name = "table";
    enum ltype t = classify(w, idx, &n);
    switch (t) {
    case LT_BAD:
        return e->err.code;
    case LT_STRING:
        v.type = TIDE_DDB_SCALAR_STRING;
        v.type_name = "string";
        v.p = lua_tolstring(L, idx, &v.len);
        break;
    case LT_NUMBER:
        v.type = TIDE_DDB_SCALAR_NUMBER;
        v.type_name = "number";
        v.x = lua_tonumber(L, idx);
        break;
    case LT_BOOL:
        v.type = TIDE_DDB_SCALAR_BOOL;
        v.type_name = "boolean";
        v.b = lua_toboolean(L, idx);
        break;
    case LT_NULL:
        v.type = TIDE_DDB_SCALAR_NULL;
        v.type_name = "userdata";
        break;
    case LT_BINARY:
    case LT_BIGNUM: {
        bool binary = t == LT_BINARY;
        v.type = binary ? TIDE_DDB_SCALAR_BINARY : TIDE_DDB_SCALAR_DECIMAL;
        rc = binary ? wrapped_string(w, idx, "bytes", "binary value without a bytes string", &v.p,
                                     &v.len)
                    : wrapped_string(w, idx, "value", "tide.number without a value string", &v.p,
                                     &v.len);
        if (rc < 0)
            return rc;
        break;
    }
    case LT_SET:
        return walk_set(w, idx);
    case LT_LIST:
    case LT_MAP:
        if (!lua_checkstack(L, STACK_PER_LEVEL))
            return tide_ddb_enc_fail(e, TIDE_ENOMEM, "Lua stack exhausted");
        rc = tide_ddb_enc_open(e, t == LT_LIST ? TIDE_DDB_SHAPE_ARRAY : TIDE_DDB_SHAPE_OBJECT,
                               "table");
        if (rc == 0)
            rc = t == LT_LIST ? walk_items(w, idx, n) : walk_members(w, idx);
        return rc < 0 ? rc : tide_ddb_enc_close(e);
    case LT_OTHER:
    default:
        v.type = TIDE_DDB_SCALAR_OTHER;
        v.type_name = luaL_typename(L, idx);
        break;
    }
    return tide_ddb_enc_scalar(e, &v);
}

/* ---- the calls ------------------------------------------------------------ */

/* Walks the value at index 1 into g's output buffer, read in mode; rc of
 * the walk, the message in e->err. // [arg, guard] */
static int encode(lua_State *L, struct guard *g, struct tide_ddb_encoder *e,
                  enum tide_ddb_mode mode, const char *root, bool prefix)
{
    struct walker w = {L, e, g->mt[UV_LIST - 1], g->mt[UV_SET - 1], g->mt[UV_BINARY - 1],
                       g->mt[UV_NUMBER - 1]};
    tide_ddb_encoder_init(e, &g->out, &g->scratch, mode, root, prefix);
    int rc = walk(&w, 1);
    lua_settop(L, 2);               // [arg, guard]
    return rc < 0 ? rc : tide_ddb_enc_finish(e);
}

/* Pushes the encoder's output: // [.., json] */
static void push_out(lua_State *L, struct guard *g)
{
    lua_pushlstring(L, g->out.p ? g->out.p : "", g->out.len);
}

/* Pushes the encoder's output as a buffer (see lua_codec.h): // [.., buf] */
static void push_out_buffer(lua_State *L, struct guard *g)
{
    struct tide_buffer *b = lua_newuserdata(L, sizeof(*b) + g->out.len); // [.., buf]
    b->len = g->out.len;
    if (g->out.len > 0)
        memcpy(b->data, g->out.p, g->out.len);
    luaL_getmetatable(L, TIDE_BUFFER_MT); // [.., buf, mt]
    lua_setmetatable(L, -2);              // [.., buf]
}

/* encode_request, encode_request_buffer and encode_value: the value at
 * index 1 read in mode, its text handed out by push; frame is the entry
 * point's (TIDE_CODEC_FRAME). */
static int encode_call(lua_State *L, enum tide_ddb_mode mode, const char *root, bool prefix,
                       void (*push)(lua_State *, struct guard *), uintptr_t frame)
{
    lua_settop(L, 1);
    struct guard *g = tide_codec_guard_acquire(L, lua_upvalueindex(UV_GUARD), frame);
    struct tide_ddb_encoder e;      // [v, guard]
    int rc = encode(L, g, &e, mode, root, prefix);
    if (rc == 0)
        push(L, g);                 // [v, guard, result]
    tide_codec_guard_done(g);
    return rc == 0 ? 1 : tide_codec_push_fail(L, e.err.message);
}

int tide_codec_encode_request(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    return encode_call(L, TIDE_DDB_MODE_PLAIN, "params", false, push_out, TIDE_CODEC_FRAME());
}

int tide_codec_encode_request_buffer(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    int nret =
        encode_call(L, TIDE_DDB_MODE_PLAIN, "params", false, push_out_buffer, TIDE_CODEC_FRAME());
    if (nret == 1) {
        const struct tide_buffer *b = lua_touserdata(L, -1);
        lua_pushnumber(L, (lua_Number)b->len); // [.., buf, len]
        nret = 2;
    }
    return nret;
}

int tide_codec_encode_value(lua_State *L)
{
    if (lua_isnoneornil(L, 1))
        return luaL_argerror(L, 1, "value expected");
    return encode_call(L, TIDE_DDB_MODE_AV, "value", true, push_out, TIDE_CODEC_FRAME());
}

/* Encodes the item and measures that text (ddb_limits.c, one pass of yajl):
 * the client asks only for items whose text could be over the limit. */
int tide_codec_item_size(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    struct guard *g = tide_codec_guard_acquire(L, lua_upvalueindex(UV_GUARD), TIDE_CODEC_FRAME());
    struct tide_ddb_encoder e;      // [item, guard]
    size_t size = 0;
    int rc = encode(L, g, &e, TIDE_DDB_MODE_AV_MAP, "item", true);
    /* no Lua call in there: nothing can unwind through it */
    if (rc == 0)
        rc = tide_ddb_item_size(g->out.p, g->out.len, &size, &e.err);
    tide_codec_guard_done(g);
    if (rc < 0)
        return tide_codec_push_fail(L, e.err.message);
    lua_pushnumber(L, (lua_Number)size);
    return 1;
}
