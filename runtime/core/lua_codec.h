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
#include <stdint.h>

#include <yajl/yajl_parse.h>

#include "ddb_json_writer.h"
#include "lua_buffer.h"
#include "error.h"

/* Upvalues of every codec function: the shared metatables, then the Lua
 * state's shared guard (see below). */
enum { UV_LIST = 1, UV_SET, UV_BINARY, UV_NUMBER, UV_GUARD, UV_COUNT = UV_GUARD };

/* Bound on nesting (tables inside tables, plain or AttributeValue), in path
 * elements: DynamoDB's 32 levels plus the request's own wrappers fit easily;
 * a cyclic table or absurd input stops here. */
#define MAX_FRAMES 100

/* ---- the guard: owns the C resources of one call ------------------------ */

/* A call of the codec (encode_*, decode_*, item_size, json_encode,
 * decode_stream_records) owns C memory while it runs: the encoder's output
 * buffer, yajl's parser. A Lua error can unwind through the call at any
 * allocation (out of memory, an error raised by a __gc metamethod, which
 * LuaJIT passes on from the allocation that ran it), so what the call owns
 * must be reachable from a Lua object with a __gc: the guard userdata.
 *
 * One guard per Lua state (created when the module opens, shared by every
 * function of tide.core through an upvalue) serves the calls one after the
 * other: a per-call userdata with a finalizer costs as much as the rest of
 * a small decode. The shared guard also keeps, across calls, its output
 * buffer (up to GUARD_KEEP_OUT bytes) and an arena inside the userdata that
 * yajl allocates from (the handle, lexer, byte stack and decode buffer of a
 * parse fit; larger requests fall back to malloc), so decoding or encoding
 * a small value does no malloc at all.
 *
 * in_use says a call holds the shared guard; frame is the address of the C
 * frame of that call's entry point (TIDE_CODEC_FRAME). When a call starts
 * and finds the guard in use, the holder is either
 *   - still running, and this call is nested inside it (a __gc metamethod,
 *     run by an allocation of the holder, called the codec again): then
 *     this call's frame is deeper on the C stack than the holder's, i.e. at
 *     a lower address (the stack grows down on every LuaJIT target, and
 *     LuaJIT runs all coroutines of a state on the one C stack: a call of
 *     the codec never yields, so a running call is always an ancestor of
 *     the current C frame);
 *   - or gone: a Lua error unwound through it, leaving in_use set and its
 *     parser half-used. Then this call's frame is not deeper than the
 *     holder's was (usually the very same address: the same call site
 *     after a pcall).
 * So: frame >= holder's frame means the holder is gone, and the new call
 * frees what it left (yajl_free of its parser, through the arena's
 * allocator) and takes the guard over. frame < holder's frame may be
 * either: the call then takes a fresh guard of its own, a userdata like the
 * shared one that the GC finalizes (always safe; the left-over resources,
 * if the holder was in fact gone, stay owned by the shared guard until a
 * later call takes it over or the state closes). */
#define GUARD_ARENA 4096
/* Output buffers up to this size are kept for the next call. */
#define GUARD_KEEP_OUT (64 * 1024)
/* Token arrays of decode_stream_records up to this many entries are kept:
 * a full GetRecords page (1 MB) takes about 200,000. */
#define GUARD_KEEP_TOKENS (256 * 1024)

struct guard {
    struct tide_json_buf out; /* the encoder's output */
    yajl_handle parser;       /* the decoder's parser */
    yajl_handle nested_parser; /* tide_codec_decode_nested's, kept for the call */
    void *nested_dec;         /* and its decoder state (malloc) */
    void *tokens;             /* decode_stream_records' jsmn tokens (malloc) */
    size_t tokens_cap;        /* entries of tokens */
    yajl_alloc_funcs afs;     /* allocating from arena, for yajl_alloc */
    uintptr_t frame;          /* see above */
    size_t arena_used;        /* bytes of arena handed out (with headers) */
    const void *mt[UV_GUARD - 1]; /* the metatables UV_LIST..UV_NUMBER, for
                                     the encoder's checks */
    unsigned char in_use;     /* the shared guard is held by a call */
    unsigned char shared;     /* 0 for a fresh guard of a nested call */
    unsigned char arena[GUARD_ARENA];
};

/* The address of the C frame of the running function, evaluated in the
 * lua_CFunction of a codec entry point itself. On x86-64 it is the same for
 * every entry point called from the same place (the frame pointer is the
 * stack pointer at the function's entry, whatever the frame's size), so a
 * call takes the guard over after an error in any other; where it depends
 * on the frame's size, a call may take a fresh guard instead (safe, see
 * above). The frame's address, not a local variable's: AddressSanitizer
 * may move locals to a heap "fake stack". */
#define TIDE_CODEC_FRAME() ((uintptr_t)__builtin_frame_address(0))

/* Pushes the Lua state's shared guard, creating it the first time (for the
 * upvalues of a module's functions): // [..] -> [.., guard] */
void tide_codec_guard_push_shared(lua_State *L);

/* Takes a guard for one call, from the entry point whose frame is `frame`:
 * the shared guard at index `shared` (an upvalue), or a fresh one when it
 * is in use by a call that may still be running. The guard is pushed:
 * // [..] -> [.., guard]. Its output buffer is empty, its parser NULL. */
struct guard *tide_codec_guard_acquire(lua_State *L, int shared, uintptr_t frame);

/* Ends the call that took g: frees its parser and, unless it is kept for
 * the next call, its output buffer; gives the shared guard back. */
void tide_codec_guard_done(struct guard *g);

/* Frees what g holds (idempotent); the __gc of every guard. */
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

/* For a call that holds the guard g (decode_stream_records: the data and
 * meta text of each record): decodes text, one AttributeValue (av) or
 * plain JSON, and pushes the value: // [..] -> [.., value]. Returns 0 and
 * pushes nothing when the text does not decode, or on out of memory: the
 * caller keeps the text, and whoever decodes it later says what is wrong.
 * The parser is kept in g for the rest of the call. */
int tide_codec_decode_nested(lua_State *L, struct guard *g, const char *text, size_t len, int av);

/* core.decode_stream_records(body) (lua_stream_records.c) */
int tide_codec_decode_stream_records(lua_State *L);

#endif
