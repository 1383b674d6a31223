/*
 * lua_codec.h - what the two halves of the DynamoDB JSON codec of tide.core
 * share: lua_codec.c (the encoder, item_size, the value constructors and the
 * module table) and lua_decode.c (the decoder). Internal to tide.core.
 */
#ifndef TIDE_LUA_CODEC_H
#define TIDE_LUA_CODEC_H

#include <lua.h>
#include <stdarg.h>
#include <stddef.h>

#include <yajl/yajl_parse.h>

#include "ddb_json_writer.h"
#include "error.h"

/* Upvalues of every codec function: the shared metatables. */
enum { UV_LIST = 1, UV_SET, UV_BINARY, UV_NUMBER, UV_GUARD, UV_COUNT = UV_GUARD };

/* Bound on nesting (tables inside tables, plain or AttributeValue), in path
 * elements: DynamoDB's 32 levels plus the request's own wrappers fit easily;
 * a cyclic table or absurd input stops here. */
#define MAX_FRAMES 100

/* ---- the guard: owns the C resources of one call ------------------------ */

/* Every codec call that allocates first pushes a guard userdata (metatable
 * UV_GUARD, whose __gc releases it): a Lua error raised in the middle of the
 * call (out of memory, a failing finalizer) cannot leak what it holds. The
 * normal paths release it themselves at once. */
struct guard {
    struct tide_json_buf out; /* the encoder's output */
    yajl_handle parser;       /* the decoder's parser */
};

/* Pushes a new, empty guard: // [.., guard] */
struct guard *tide_codec_guard_new(lua_State *L);
/* Frees what g holds (idempotent). */
void tide_codec_guard_release(struct guard *g);

/* ---- paths and errors ----------------------------------------------------- */

/* One element of a path: a key of an object, or an index into an array. */
struct frame {
    const char *key; /* NULL for an array index */
    size_t len;
    size_t index;    /* 1-based, as Lua sees it */
};

struct walk {
    lua_State *L;
    const char *root; /* name shown for the argument itself */
    int prefix;       /* show root before the frames too */
    int nframes;
    int av_depth;     /* nested L/M levels of the current AttributeValue */
    struct frame frames[MAX_FRAMES];
    struct tide_error err;
};

void tide_codec_walk_init(struct walk *w, lua_State *L, const char *root, int prefix);

/* Sets w->err to "<path>: <message>", the path made of w's frames (like
 * Item.tags[3] or ExpressionAttributeValues[":v"]); returns -1. */
int tide_codec_fail(struct walk *w, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int tide_codec_failv(struct walk *w, int code, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* Largest length <= n that does not cut a UTF-8 sequence of s. */
size_t tide_codec_utf8_cut(const char *s, size_t n);

/* Pushes nil, msg and returns 2. */
int tide_codec_push_fail(lua_State *L, const char *msg);

/* ---- the decoder (lua_decode.c) ------------------------------------------ */

/* core.decode_response(json) -> table | nil, err */
int tide_codec_decode_response(lua_State *L);
/* core.decode_value(json of one AttributeValue) -> value | nil, err */
int tide_codec_decode_value(lua_State *L);

#endif
