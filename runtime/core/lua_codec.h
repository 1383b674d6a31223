/*
 * lua_codec.h - what the files of the codec's Lua binding share: the guard
 * that owns a call's C resources, the upvalues of its functions, and the
 * entry points (request bodies as buffers: lua_buffer.h). Internal to
 * tide.core.
 *
 * The codec is in two layers: the pure C of the ddb_*.c files (DynamoDB
 * JSON parsing, the marshalling rules, the limits; no lua.h) and this thin
 * binding: lua_encode.c walks Lua values into the pure encoder, lua_decode.c
 * and lua_stream_records.c are visitors of the pure readers that build Lua
 * values, lua_codec.c holds the guard, the value constructors and the
 * module table.
 */
#ifndef TIDE_LUA_CODEC_H
#define TIDE_LUA_CODEC_H

#include <lua.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ddb_decode.h"
#include "ddb_json_writer.h"
#include "ddb_stream_records.h"
#include "json_arena.h"
#include "lua_buffer.h"

/* Upvalues of every codec function: the shared metatables, then the Lua
 * state's shared guard (see below). */
enum { UV_LIST = 1, UV_SET, UV_BINARY, UV_NUMBER, UV_GUARD, UV_COUNT = UV_GUARD };

/* ---- the guard: owns the C resources of one call ------------------------ */

/* A call of the codec (encode_*, decode_*, item_size, json_encode,
 * decode_stream_records) owns C memory while it runs: the encoder's output
 * buffer, yajl's parsers. A Lua error can unwind through the call at any
 * allocation (out of memory, an error raised by a __gc metamethod, which
 * LuaJIT passes on from the allocation that ran it), so what the call owns
 * must be reachable from a Lua object with a __gc: the guard userdata.
 *
 * One guard per Lua state (created when the module opens, shared by every
 * function of tide.core through an upvalue) serves the calls one after the
 * other: a per-call userdata with a finalizer costs as much as the rest of
 * a small decode. The shared guard also keeps, across calls, its output
 * buffer (up to GUARD_KEEP_OUT bytes), its decoders and an arena inside the
 * userdata that yajl allocates from (json_arena.h), so decoding or encoding
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
 *     parsers half-used. Then this call's frame is not deeper than the
 *     holder's was (usually the very same address: the same call site
 *     after a pcall).
 * So: frame >= holder's frame means the holder is gone, and the new call
 * frees what it left and takes the guard over. frame < holder's frame may
 * be either: the call then takes a fresh guard of its own, a userdata like
 * the shared one that the GC finalizes (always safe; the left-over
 * resources, if the holder was in fact gone, stay owned by the shared guard
 * until a later call takes it over or the state closes). */
/* Output buffers up to this size are kept for the next call. */
#define GUARD_KEEP_OUT (64 * 1024)
/* Token arrays of decode_stream_records up to this many entries are kept:
 * a full GetRecords page (1 MB) takes about 200,000. */
#define GUARD_KEEP_TOKENS (256 * 1024)

struct guard {
    struct tide_json_buf out;       /* the encoder's output */
    struct tide_json_buf scratch;   /* the encoder's members of large sets */
    struct tide_ddb_decoder *dec;   /* decode_response's, decode_value's (malloc) */
    struct tide_ddb_decoder *nested; /* tide_codec_decode_nested's (malloc) */
    struct tide_ddb_records_reader records; /* decode_stream_records' */
    yajl_handle input;              /* decode_input's parser (lua_input.c) */
    uintptr_t frame;                /* see above */
    const void *mt[UV_GUARD - 1];   /* the metatables UV_LIST..UV_NUMBER, for
                                       the encoder's checks */
    unsigned char in_use;           /* the shared guard is held by a call */
    unsigned char shared;           /* 0 for a fresh guard of a nested call */
    struct tide_json_arena arena;   /* yajl allocates from it (last: large) */
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
 * // [..] -> [.., guard]. Its output buffer is empty, its parsers closed. */
struct guard *tide_codec_guard_acquire(lua_State *L, int shared, uintptr_t frame);

/* Ends the call that took g: closes its parsers and, unless they are kept
 * for the next call, frees its buffers; gives the shared guard back. */
void tide_codec_guard_done(struct guard *g);

/* The decoder of g, made the first time (NULL when out of memory). */
struct tide_ddb_decoder *tide_codec_guard_decoder(struct guard *g, bool nested);

/* Wraps the value on top in a new table {field = value} with the metatable
 * of upvalue uv (core.binary's bytes, a tide.number's text), in a codec
 * function: // [.., v] -> [.., t] */
void tide_codec_wrap(lua_State *L, const char *field, int uv);

/* Pushes nil, msg and returns 2. */
int tide_codec_push_fail(lua_State *L, const char *msg);

/* ---- entry points ----------------------------------------------------------- */

/* lua_encode.c */
int tide_codec_encode_request(lua_State *L);        /* (params) -> json | nil, err */
int tide_codec_encode_request_buffer(lua_State *L); /* (params) -> buffer, length | nil, err */
int tide_codec_encode_value(lua_State *L);          /* (v) -> json | nil, err */
int tide_codec_item_size(lua_State *L);             /* (item) -> bytes | nil, err */

/* lua_decode.c */
int tide_codec_decode_response(lua_State *L); /* (json) -> table | nil, err */
int tide_codec_decode_value(lua_State *L);    /* (json of one AttributeValue) -> value | nil, err */
int tide_codec_decode_json(lua_State *L);     /* (plain JSON, numbers exact) -> value | nil, err */

/* For a call that holds the guard g (decode_stream_records: the data and
 * meta text of each record): decodes text, one AttributeValue (av) or
 * plain JSON, and pushes the value: // [..] -> [.., value]. Returns 0 and
 * pushes nothing when the text does not decode, or on out of memory: the
 * caller keeps the text, and whoever decodes it later says what is wrong.
 * The parser is kept in g for the rest of the call. */
int tide_codec_decode_nested(lua_State *L, struct guard *g, const char *text, size_t len, bool av);

/* lua_stream_records.c: (body) -> page | nil, err */
int tide_codec_decode_stream_records(lua_State *L);

#endif
