/*
 * lua_codec.c - the DynamoDB JSON codec of tide.core: plain Lua values in
 * and out, like the AWS DocumentClient (conventions: docs/codec.md).
 *
 * This file holds the encoder, item_size, the value constructors and the
 * module table; the decoder (yajl's callbacks building Lua values) is in
 * lua_decode.c, and lua_codec.h is what the two share. Encoding writes
 * compact JSON text straight into one buffer (ddb_json_writer.c). Which
 * fields hold AttributeValues is decided by key name (ddb_schema.c). Value
 * errors come back as nil, message naming the path ("Item.tags[3]: ...");
 * only wrong argument types raise.
 *
 * Resources: every call first takes a "guard" userdata that owns the output
 * buffer and the parser. Its __gc frees them, so a Lua error raised in the
 * middle (out of memory, a failing finalizer) cannot leak them; on the normal
 * paths the call gives them back itself at once. The guard is one per Lua
 * state, reused call after call (with the output buffer and an arena for
 * yajl): how a call nested in another or left behind by an error is told
 * apart is in lua_codec.h.
 */
#include "lua_codec.h"
#include "lua_core.h"

#include <lauxlib.h>

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ddb_json_writer.h"
#include "ddb_limits.h"
#include "ddb_number.h"
#include "ddb_schema.h"
#include "ddb_text.h"
#include "error.h"

/* Lua stack slots one level of recursion may use. */
#define STACK_PER_LEVEL 6
/* Sets up to this size are checked for duplicates without allocating. */
#define SMALL_SET 16

/* ---- the guard: owns the C resources of one call ------------------------ */

/* The arena yajl allocates from (see lua_codec.h). Each block is preceded by
 * a header holding its size and aligned to ARENA_ALIGN; freeing a block is
 * a no-op (the whole arena is reset when the call ends), growing the last
 * block happens in place. What does not fit comes from malloc and goes back
 * to free: yajl_free of the parser returns it, also for a parser left by a
 * call a Lua error interrupted. Under AddressSanitizer the free part of the
 * arena and a red zone after each block are poisoned, so an overrun is
 * still caught. */
#define ARENA_ALIGN 16
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define ARENA_REDZONE 16
#define ARENA_POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define ARENA_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define ARENA_REDZONE 0
#define ARENA_POISON(p, n) ((void)(p), (void)(n))
#define ARENA_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

static int in_arena(const struct guard *g, const void *p)
{
    uintptr_t x = (uintptr_t)p, base = (uintptr_t)g->arena;
    return x >= base && x < base + GUARD_ARENA;
}

static size_t block_size(const void *p)
{
    size_t n;
    memcpy(&n, (const unsigned char *)p - ARENA_ALIGN, sizeof(n));
    return n;
}

static void set_block_size(void *p, size_t n)
{
    memcpy((unsigned char *)p - ARENA_ALIGN, &n, sizeof(n));
}

static void *arena_malloc(void *ctx, size_t n)
{
    struct guard *g = ctx;
    uintptr_t base = (uintptr_t)g->arena, end = base + GUARD_ARENA;
    uintptr_t at = base + g->arena_used + ARENA_ALIGN; /* room for the header */
    at = (at + ARENA_ALIGN - 1) & ~(uintptr_t)(ARENA_ALIGN - 1);
    if (at < end && n <= end - at && n + ARENA_REDZONE <= end - at) {
        void *p = (void *)at;
        ARENA_UNPOISON((unsigned char *)p - ARENA_ALIGN, ARENA_ALIGN + n);
        set_block_size(p, n);
        g->arena_used = at + n + ARENA_REDZONE - base;
        return p;
    }
    return malloc(n);
}

static void arena_free(void *ctx, void *p)
{
    if (p != NULL && !in_arena(ctx, p))
        free(p);
}

static void *arena_realloc(void *ctx, void *p, size_t n)
{
    struct guard *g = ctx;
    if (p == NULL)
        return arena_malloc(ctx, n);
    if (!in_arena(g, p))
        return realloc(p, n);
    size_t old = block_size(p);
    if (n <= old)
        return p; /* yajl never shrinks; keep the block as it is */
    uintptr_t base = (uintptr_t)g->arena, at = (uintptr_t)p;
    size_t room = base + GUARD_ARENA - at;
    if (at + old + ARENA_REDZONE == base + g->arena_used && n <= room &&
        n + ARENA_REDZONE <= room) { /* the last block: grow it */
        ARENA_UNPOISON(p, n);
        set_block_size(p, n);
        g->arena_used = at + n + ARENA_REDZONE - base;
        return p;
    }
    void *q = arena_malloc(ctx, n);
    if (q != NULL)
        memcpy(q, p, old);
    return q; /* the old block is reclaimed with the arena */
}

/* Empties the arena: every block in it is free again. */
static void arena_reset(struct guard *g)
{
    if (g->arena_used > 0)
        ARENA_POISON(g->arena, GUARD_ARENA);
    g->arena_used = 0;
}

/* Frees the parsers and decoder state of the call that held g. */
static void free_parsers(struct guard *g)
{
    if (g->parser != NULL) {
        yajl_free(g->parser); /* returns what did not fit in the arena */
        g->parser = NULL;
    }
    if (g->nested_parser != NULL) {
        yajl_free(g->nested_parser);
        g->nested_parser = NULL;
    }
    free(g->nested_dec);
    g->nested_dec = NULL;
}

/* Frees decode_stream_records' token array. */
static void free_tokens(struct guard *g)
{
    free(g->tokens);
    g->tokens = NULL;
    g->tokens_cap = 0;
}

void tide_codec_guard_release(struct guard *g)
{
    free(g->out.p);
    memset(&g->out, 0, sizeof(g->out));
    free_tokens(g);
    free_parsers(g);
    arena_reset(g);
}

void tide_codec_guard_done(struct guard *g)
{
    free_parsers(g);
    arena_reset(g);
    if (!g->shared || g->out.cap > GUARD_KEEP_OUT || g->out.oom) {
        free(g->out.p);
        memset(&g->out, 0, sizeof(g->out));
    }
    if (!g->shared || g->tokens_cap > GUARD_KEEP_TOKENS)
        free_tokens(g);
    g->out.len = 0;
    g->in_use = 0;
}

static int guard_gc(lua_State *L)
{
    struct guard *g = lua_touserdata(L, 1);
    if (g != NULL) {
        tide_codec_guard_release(g);
        /* the userdata's memory goes back to LuaJIT's allocator */
        ARENA_UNPOISON(g->arena, GUARD_ARENA);
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
    g->afs.malloc = arena_malloc;
    g->afs.realloc = arena_realloc;
    g->afs.free = arena_free;
    g->afs.ctx = g;
    g->shared = (unsigned char)shared;
    if (luaL_newmetatable(L, GUARD_MT)) { // [.., guard, mt]
        lua_pushcfunction(L, guard_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);              // [.., guard]
    ARENA_POISON(g->arena, GUARD_ARENA);
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
        free_parsers(g);
        arena_reset(g);
        g->out.oom = false;
    }
    g->in_use = 1;
    g->frame = frame;
    g->out.len = 0;
    lua_pushvalue(L, shared);             // [.., guard]
    return g;
}

/* ---- paths and errors, shared by encoder and decoder -------------------- */

void tide_codec_walk_init(struct walk *w, lua_State *L, const char *root, int prefix)
{
    w->L = L;
    w->root = root;
    w->prefix = prefix;
    w->nframes = 0;
    w->av_depth = 0;
    tide_error_clear(&w->err);
}

static int is_ident(const char *k, size_t n)
{
    if (n == 0 || !((k[0] >= 'A' && k[0] <= 'Z') || (k[0] >= 'a' && k[0] <= 'z') || k[0] == '_'))
        return 0;
    for (size_t i = 1; i < n; i++) {
        char c = k[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_'))
            return 0;
    }
    return 1;
}

size_t tide_codec_utf8_cut(const char *s, size_t n)
{
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    return n;
}

struct sbuf {
    char *p;
    size_t len, cap;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
    if (n > b->cap - 1 - b->len)
        n = b->cap - 1 - b->len;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

/* Writes the path of the current position, like Item.tags[3] or
 * ExpressionAttributeValues[":v"], eliding the middle of very long ones. */
static void format_path(const struct walk *w, char *out, size_t cap)
{
    char full[2048];
    struct sbuf b = {full, 0, sizeof(full)};
    full[0] = '\0';
    if (w->prefix || w->nframes == 0)
        sb_add(&b, w->root, strlen(w->root));
    for (int i = 0; i < w->nframes; i++) {
        const struct frame *f = &w->frames[i];
        char num[32];
        if (f->key == NULL) {
            sb_add(&b, num, (size_t)snprintf(num, sizeof(num), "[%zu]", f->index));
        } else if (is_ident(f->key, f->len)) {
            if (b.len > 0)
                sb_add(&b, ".", 1);
            sb_add(&b, f->key, f->len);
        } else {
            size_t n = f->len > 40 ? tide_codec_utf8_cut(f->key, 40) : f->len;
            sb_add(&b, "[\"", 2);
            for (size_t k = 0; k < n; k++) {
                unsigned char c = (unsigned char)f->key[k];
                if (c < 0x20 || c == 0x7f || c == '"' || c == '\\')
                    sb_add(&b, num, (size_t)snprintf(num, sizeof(num), "\\x%02X", c));
                else
                    sb_add(&b, (const char *)&c, 1);
            }
            sb_add(&b, n < f->len ? "...\"]" : "\"]", n < f->len ? 5 : 2);
        }
    }
    if (b.len < cap) {
        memcpy(out, full, b.len + 1);
        return;
    }
    size_t half = (cap - 4) / 2;
    size_t head = tide_codec_utf8_cut(full, half);
    size_t tail = b.len - half;
    while (tail < b.len && ((unsigned char)full[tail] & 0xC0) == 0x80)
        tail++;
    snprintf(out, cap, "%.*s...%s", (int)head, full, full + tail);
}

int tide_codec_failv(struct walk *w, int code, const char *fmt, va_list ap)
{
    char msg[320], path[180];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    format_path(w, path, sizeof(path));
    tide_error_set(&w->err, code, "%s: %s", path, msg);
    return -1;
}

int tide_codec_fail(struct walk *w, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tide_codec_failv(w, code, fmt, ap);
    va_end(ap);
    return -1;
}

static int fail_oom(struct walk *w)
{
    return tide_codec_fail(w, TIDE_ENOMEM, "out of memory");
}

int tide_codec_push_fail(lua_State *L, const char *msg)
{
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

/* Enters one level: checks the depth bound and the Lua stack. */
static int push_frame(struct walk *w, const char *key, size_t len, size_t index)
{
    if (w->nframes >= MAX_FRAMES)
        return tide_codec_fail(w, TIDE_EINVAL, "nesting deeper than %d levels (a cyclic table?)",
                               MAX_FRAMES);
    if (!lua_checkstack(w->L, STACK_PER_LEVEL))
        return tide_codec_fail(w, TIDE_ENOMEM, "Lua stack exhausted");
    struct frame *f = &w->frames[w->nframes++];
    f->key = key;
    f->len = len;
    f->index = index;
    return 0;
}

static void pop_frame(struct walk *w)
{
    w->nframes--;
}

/* Enters one nested L or M level of an AttributeValue. */
static int enter_av(struct walk *w)
{
    if (++w->av_depth > TIDE_DDB_MAX_DEPTH)
        return tide_codec_fail(w, TIDE_EINVAL,
                               "nesting deeper than %d levels (DynamoDB's limit; a cyclic table?)",
                               TIDE_DDB_MAX_DEPTH);
    return 0;
}

/* ---- encoder: Lua -> JSON text ------------------------------------------- */

struct enc {
    struct walk w;
    const void *list_mt, *set_mt, *binary_mt, *number_mt;
    struct tide_json_buf *out; /* owned by the guard */
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

/* The member a value is written for: its key in an object (which decides,
 * by schema, what the value holds), or no key for an array item or the
 * root. The key itself is already written when the value is. */
struct slot {
    const char *key;
    size_t klen;
};

static const struct slot ROOT = {NULL, 0};

static struct slot in_array(void)
{
    struct slot s = {NULL, 0};
    return s;
}

static struct slot in_object(const char *k, size_t klen)
{
    struct slot s = {k, klen};
    return s;
}

static void enc_init(struct enc *e, lua_State *L, const char *root, int prefix, struct guard *g)
{
    tide_codec_walk_init(&e->w, L, root, prefix);
    e->list_mt = g->mt[UV_LIST - 1];
    e->set_mt = g->mt[UV_SET - 1];
    e->binary_mt = g->mt[UV_BINARY - 1];
    e->number_mt = g->mt[UV_NUMBER - 1];
    e->out = &g->out;
}

/* Output helpers. Out of memory is sticky in the buffer and checked once at
 * the end (see enc_done), so they return nothing. */
static void out_lit(struct enc *e, const char *s, size_t n)
{
    struct tide_json_buf *b = e->out;
    if (b->p != NULL && n <= b->cap - b->len) { /* the buffer kept from earlier calls has room */
        memcpy(b->p + b->len, s, n);
        b->len += n;
        return;
    }
    tide_json_add(b, s, n);
}

#define OUT_LIT(e, s) out_lit((e), (s), sizeof(s) - 1)

static void out_c(struct enc *e, char c)
{
    struct tide_json_buf *b = e->out;
    if (b->len < b->cap) {
        b->p[b->len++] = c;
        return;
    }
    tide_json_addc(b, c);
}

static void out_string(struct enc *e, const char *p, size_t n)
{
    tide_json_add_string(e->out, p, n);
}

/* Opens {"type": of an AttributeValue; av_close ends it. */
static void av_open(struct enc *e, const char *type)
{
    out_c(e, '{');
    out_string(e, type, strlen(type));
    out_c(e, ':');
}

static void av_close(struct enc *e)
{
    out_c(e, '}');
}

/* |x| < 2^63 */
static void out_int(struct enc *e, long long x)
{
    char buf[24], *p = buf + sizeof(buf);
    unsigned long long u = x < 0 ? 0ULL - (unsigned long long)x : (unsigned long long)x;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (x < 0)
        *--p = '-';
    out_lit(e, p, (size_t)(buf + sizeof(buf) - p));
}

/* A non-integer plain number, written as jansson wrote it (so request
 * bodies stay byte for byte what they were); rare in DynamoDB requests. */
static int out_real(struct enc *e, double x)
{
    tide_json_add_real(e->out, x); /* out of memory is checked at the end */
    return 0;
}

/* A plain number: integers stay integers (DynamoDB reads Limit, Segment,
 * ... as ints). */
static int out_number(struct enc *e, double x)
{
    if (x == floor(x) && fabs(x) < 9.2e18) {
        out_int(e, (long long)x);
        return 0;
    }
    return out_real(e, x);
}

/* Checks the keys of the table at idx, which has no string key first:
 * exactly 1..n gives LT_LIST. Scans every key so that the message does not
 * depend on the traversal order. // [k, v] on entry, [] on success */
static enum ltype list_shape(struct enc *e, int idx, size_t *n)
{
    lua_State *L = e->w.L;
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
    if (other != NULL)
        tide_codec_fail(&e->w, TIDE_EINVAL, "table has a %s key (map keys must be strings)", other);
    else if (has_str)
        tide_codec_fail(&e->w, TIDE_EINVAL, "table mixes array items and string keys (\"%s\")", str);
    else if (has_nonint)
        tide_codec_fail(&e->w, TIDE_EINVAL, "table has a non-integer key %.14g", nonint);
    else if (out_of_range || count != len)
        tide_codec_fail(&e->w, TIDE_EINVAL, "array has holes (keys must be exactly 1..n)");
    else {
        *n = len;
        return LT_LIST;
    }
    return LT_BAD;
}

/* Classifies the value at idx (absolute). For LT_LIST, *n is its length.
 * Map keys are checked later, while encoding. */
static enum ltype classify(struct enc *e, int idx, size_t *n)
{
    lua_State *L = e->w.L;
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
        if (mt == e->binary_mt)
            return LT_BINARY;
        if (mt == e->number_mt)
            return LT_BIGNUM;
        if (mt == e->set_mt)
            return LT_SET;
        marked_list = mt == e->list_mt;
    }
    lua_pushnil(L);                 // [nil]
    if (!lua_next(L, idx)) {        // []
        *n = 0;
        return marked_list ? LT_LIST : LT_MAP;
    }
    if (lua_type(L, -2) == LUA_TSTRING) { // [k, v]
        if (marked_list) {
            tide_codec_fail(&e->w, TIDE_EINVAL, "a core.list table has the string key \"%.40s\"",
                 lua_tostring(L, -2));
            return LT_BAD;
        }
        lua_pop(L, 2);              // []
        return LT_MAP;
    }
    return list_shape(e, idx, n);
}

/* Bytes of the binary wrapper at idx (anchored by the wrapper). */
static int binary_bytes(struct enc *e, int idx, const char **p, size_t *len)
{
    lua_State *L = e->w.L;
    lua_pushliteral(L, "bytes"); // [k]
    lua_rawget(L, idx);          // [bytes]
    if (lua_type(L, -1) != LUA_TSTRING) {
        lua_pop(L, 1);
        return tide_codec_fail(&e->w, TIDE_EINVAL, "binary value without a bytes string");
    }
    *p = lua_tolstring(L, -1, len);
    lua_pop(L, 1);               // []
    return 0;
}

/* Writes the base64 of p[0..len) as a JSON string (nothing to escape),
 * encoding straight into the output buffer. */
static void out_base64(struct enc *e, const char *p, size_t len)
{
    size_t need = tide_ddb_base64_encoded_len(len);
    struct tide_json_buf *b = e->out;
    /* the quotes, the text and the NUL tide_ddb_base64_encode adds */
    if (!tide_json_reserve(b, need + 3))
        return;
    b->p[b->len++] = '"';
    b->len += tide_ddb_base64_encode((const unsigned char *)p, len, b->p + b->len);
    b->p[b->len++] = '"';
}

/* Parses the tide.number object at idx. */
static int bignum_value(struct enc *e, int idx, struct tide_ddb_number *num)
{
    lua_State *L = e->w.L;
    struct tide_error err;
    lua_pushliteral(L, "value"); // [k]
    lua_rawget(L, idx);          // [text]
    if (lua_type(L, -1) != LUA_TSTRING) {
        lua_pop(L, 1);
        return tide_codec_fail(&e->w, TIDE_EINVAL, "tide.number without a value string");
    }
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    int rc = tide_ddb_number_parse(s, len, num, &err);
    lua_pop(L, 1);               // []
    return rc < 0 ? tide_codec_fail(&e->w, rc, "%s", err.message) : 0;
}

/* The DynamoDB number of the Lua number or tide.number at idx. */
static int number_value(struct enc *e, int idx, enum ltype t, struct tide_ddb_number *num)
{
    struct tide_error err;
    if (t == LT_BIGNUM)
        return bignum_value(e, idx, num);
    if (tide_ddb_number_from_double(lua_tonumber(e->w.L, idx), num, &err) < 0)
        return tide_codec_fail(&e->w, err.code, "%s", err.message);
    return 0;
}

static void out_number_string(struct enc *e, const struct tide_ddb_number *num)
{
    char buf[TIDE_DDB_NUMBER_BUFSIZE];
    size_t n = tide_ddb_number_format(num, buf);
    out_string(e, buf, n);
}

static int check_utf8(struct enc *e, int idx, const char **p, size_t *len)
{
    *p = lua_tolstring(e->w.L, idx, len);
    if (!tide_ddb_utf8_valid(*p, *len))
        return tide_codec_fail(&e->w, TIDE_EINVAL,
                    "string is not valid UTF-8 (wrap bytes with core.binary)");
    return 0;
}

static int enc_av(struct enc *e, int idx, struct slot s);
static int enc_plain(struct enc *e, int idx, struct slot s, enum ltype t, size_t n);
static int enc_field(struct enc *e, int idx, struct slot s);

/* How enc_members encodes each value of a map. */
enum member_mode {
    MM_FIELD,    /* plain, key matched against the schema */
    MM_PLAIN,    /* plain, key not matched (table names) */
    MM_AV,       /* AttributeValue */
    MM_AV_LISTS, /* list of AV maps when an array, else plain */
};

static int enc_av_map(struct enc *e, int idx, struct slot s, enum ltype t);
static int enc_items(struct enc *e, int idx, size_t n, int av_maps);

/* Encodes the string-keyed table at idx as an object. */
static int enc_members(struct enc *e, int idx, enum member_mode mode)
{
    lua_State *L = e->w.L;
    int first = 1;
    out_c(e, '{');
    lua_pushnil(L);                          // [nil]
    while (lua_next(L, idx)) {               // [k, v]
        int kt = lua_type(L, -2);
        if (kt != LUA_TSTRING) {
            if (kt == LUA_TNUMBER)
                return tide_codec_fail(&e->w, TIDE_EINVAL,
                            "table mixes array items and string keys ([%.14g])",
                            lua_tonumber(L, -2));
            return tide_codec_fail(&e->w, TIDE_EINVAL, "table has a %s key (map keys must be strings)",
                        luaL_typename(L, -2));
        }
        size_t klen;
        const char *k = lua_tolstring(L, -2, &klen);
        if (!tide_ddb_utf8_valid(k, klen))
            return tide_codec_fail(&e->w, TIDE_EINVAL, "a key is not valid UTF-8");
        if (push_frame(&e->w, k, klen, 0) < 0)
            return -1;
        if (!first)
            out_c(e, ',');
        first = 0;
        out_string(e, k, klen);
        out_c(e, ':');
        int v = lua_gettop(L), rc;
        struct slot cs = in_object(k, klen);
        switch (mode) {
        case MM_FIELD: rc = enc_field(e, v, cs); break;
        case MM_AV: rc = enc_av(e, v, cs); break;
        case MM_PLAIN:
        case MM_AV_LISTS: {
            size_t n;
            enum ltype t = classify(e, v, &n);
            if (t == LT_BAD)
                return -1;
            if (mode == MM_AV_LISTS && t == LT_LIST)
                rc = enc_items(e, v, n, 1);
            else
                rc = enc_plain(e, v, cs, t, n);
            break;
        }
        default: rc = -1;
        }
        if (rc < 0)
            return -1;
        pop_frame(&e->w);
        lua_pop(L, 1);                       // [k]
    }
    out_c(e, '}');
    return 0;                                // []
}

/* Encodes items 1..n of the list at idx as an array: of AV maps (av_maps
 * 1), AttributeValues (0) or plain values (-1). */
static int enc_items(struct enc *e, int idx, size_t n, int av_maps)
{
    lua_State *L = e->w.L;
    out_c(e, '[');
    for (size_t i = 1; i <= n; i++) {
        if (push_frame(&e->w, NULL, 0, i) < 0)
            return -1;
        if (i > 1)
            out_c(e, ',');
        lua_rawgeti(L, idx, (int)i); // [v]
        int v = lua_gettop(L), rc;
        if (av_maps > 0) {
            size_t cn;
            enum ltype t = classify(e, v, &cn);
            rc = t == LT_BAD ? -1 : enc_av_map(e, v, in_array(), t);
        } else if (av_maps == 0) {
            rc = enc_av(e, v, in_array());
        } else {
            size_t cn;
            enum ltype t = classify(e, v, &cn);
            rc = t == LT_BAD ? -1 : enc_plain(e, v, in_array(), t, cn);
        }
        if (rc < 0)
            return -1;
        lua_pop(L, 1);               // []
        pop_frame(&e->w);
    }
    out_c(e, ']');
    return 0;
}

/* An object of attribute name -> AttributeValue (Item, Key, ...): the table
 * at idx must be a map (t from classify). */
static int enc_av_map(struct enc *e, int idx, struct slot s, enum ltype t)
{
    (void)s;
    if (t != LT_MAP)
        return tide_codec_fail(&e->w, TIDE_EINVAL, "expected a table of attribute name -> value, got %s",
                    t == LT_LIST ? "an array" : luaL_typename(e->w.L, idx));
    return enc_members(e, idx, MM_AV);
}

/* One member of a set, kept to look for duplicates. */
struct member {
    const char *p;
    size_t len;
    struct tide_ddb_number num;
};

static int cmp_bytes(const void *a, const void *b)
{
    const struct member *x = *(const struct member *const *)a;
    const struct member *y = *(const struct member *const *)b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->p, y->p, n);
    return c != 0 ? c : (x->len > y->len) - (x->len < y->len);
}

static int cmp_numbers(const void *a, const void *b)
{
    const struct member *x = *(const struct member *const *)a;
    const struct member *y = *(const struct member *const *)b;
    return tide_ddb_number_compare(&x->num, &y->num);
}

/* Encodes the set member at the top of the stack and records it. */
static int enc_set_member(struct enc *e, char kind, struct member *m)
{
    lua_State *L = e->w.L;
    int v = lua_gettop(L);
    size_t cn;
    enum ltype t = classify(e, v, &cn);

    if (t == LT_BAD)
        return -1;
    if (kind == 'S') {
        if (t != LT_STRING)
            return tide_codec_fail(&e->w, TIDE_EINVAL, "SS members must be strings, not %s",
                        luaL_typename(L, v));
        if (check_utf8(e, v, &m->p, &m->len) < 0)
            return -1;
        out_string(e, m->p, m->len);
    } else if (kind == 'N') {
        if (t != LT_NUMBER && t != LT_BIGNUM)
            return tide_codec_fail(&e->w, TIDE_EINVAL, "NS members must be numbers, not %s",
                        luaL_typename(L, v));
        if (number_value(e, v, t, &m->num) < 0)
            return -1;
        out_number_string(e, &m->num);
    } else {
        if (t == LT_BINARY) {
            if (binary_bytes(e, v, &m->p, &m->len) < 0)
                return -1;
        } else if (t == LT_STRING) {
            m->p = lua_tolstring(L, v, &m->len);
        } else {
            return tide_codec_fail(&e->w, TIDE_EINVAL, "BS members must be core.binary values or strings");
        }
        out_base64(e, m->p, m->len);
    }
    return 0;
}

/* Finds two equal members (sorted copies of the pointers in order). */
static int check_duplicates(struct enc *e, char kind, struct member **order, size_t n)
{
    qsort(order, n, sizeof(*order), kind == 'N' ? cmp_numbers : cmp_bytes);
    for (size_t i = 1; i < n; i++) {
        const struct member *a = order[i - 1];
        if ((kind == 'N' ? cmp_numbers : cmp_bytes)(&order[i - 1], &order[i]) != 0)
            continue;
        if (kind == 'S')
            return tide_codec_fail(&e->w, TIDE_EINVAL,
                        "duplicate member \"%.*s\" in a set (DynamoDB rejects duplicates)",
                        (int)(a->len > 40 ? tide_codec_utf8_cut(a->p, 40) : a->len), a->p);
        if (kind == 'N') {
            char buf[TIDE_DDB_NUMBER_BUFSIZE];
            tide_ddb_number_format(&a->num, buf);
            return tide_codec_fail(&e->w, TIDE_EINVAL,
                        "duplicate member %s in a set (DynamoDB rejects duplicates)", buf);
        }
        return tide_codec_fail(&e->w, TIDE_EINVAL,
                    "duplicate binary member in a set (DynamoDB rejects duplicates)");
    }
    return 0;
}

static int enc_set(struct enc *e, int idx, struct slot s)
{
    lua_State *L = e->w.L;
    const char *kind;

    lua_pushliteral(L, "kind");                  // [k]
    lua_rawget(L, idx);                          // [kind]
    kind = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
    lua_pop(L, 1);                               // [] (kind anchored by the set)
    if (strcmp(kind, "SS") != 0 && strcmp(kind, "NS") != 0 && strcmp(kind, "BS") != 0)
        return tide_codec_fail(&e->w, TIDE_EINVAL, "set without a kind of \"SS\", \"NS\" or \"BS\"");

    /* The set's keys must be "kind" and exactly 1..n. */
    size_t n = lua_objlen(L, idx), count = 0;
    lua_pushnil(L);                              // [nil]
    while (lua_next(L, idx)) {                   // [k, v]
        if (lua_type(L, -2) == LUA_TNUMBER) {
            double k = lua_tonumber(L, -2);
            if (k != floor(k) || k < 1 || k > (double)n)
                return tide_codec_fail(&e->w, TIDE_EINVAL, "set has holes (members must be at 1..n)");
            count++;
        } else if (lua_type(L, -2) != LUA_TSTRING || strcmp(lua_tostring(L, -2), "kind") != 0) {
            return tide_codec_fail(&e->w, TIDE_EINVAL, "set has a key other than kind and 1..n");
        }
        lua_pop(L, 1);                           // [k]
    }
    if (count != n)
        return tide_codec_fail(&e->w, TIDE_EINVAL, "set has holes (members must be at 1..n)");
    if (n == 0)
        return tide_codec_fail(&e->w, TIDE_EINVAL, "empty sets cannot be stored in DynamoDB");

    (void)s;
    av_open(e, kind);
    out_c(e, '[');
    /* Scratch space: on the C stack, or a userdata the GC reclaims even if a
     * Lua error interrupts us. */
    struct member small[SMALL_SET], *ms = small;
    struct member *small_order[SMALL_SET], **order = small_order;
    if (n > SMALL_SET) {
        if (n > SIZE_MAX / (sizeof(*ms) + sizeof(*order)))
            return fail_oom(&e->w);
        ms = lua_newuserdata(L, n * (sizeof(*ms) + sizeof(*order))); // [scratch]
        order = (struct member **)(ms + n);
    }
    for (size_t i = 1; i <= n; i++) {
        if (push_frame(&e->w, NULL, 0, i) < 0)
            return -1;
        lua_rawgeti(L, idx, (int)i);             // [scratch?, m]
        if (i > 1)
            out_c(e, ',');
        if (enc_set_member(e, kind[0], &ms[i - 1]) < 0)
            return -1;
        order[i - 1] = &ms[i - 1];
        lua_pop(L, 1);                           // [scratch?]
        pop_frame(&e->w);
    }
    out_c(e, ']');
    av_close(e);
    int rc = check_duplicates(e, kind[0], order, n);
    if (n > SMALL_SET)
        lua_pop(L, 1);                           // []
    return rc;
}

/* One AttributeValue for the Lua value at idx. */
static int enc_av(struct enc *e, int idx, struct slot s)
{
    lua_State *L = e->w.L;
    size_t n, len;
    const char *p;
    struct tide_ddb_number num;
    int rc;
    enum ltype t = classify(e, idx, &n);

    switch (t) {
    case LT_BAD:
        return -1;
    case LT_STRING:
        if (check_utf8(e, idx, &p, &len) < 0)
            return -1;
        OUT_LIT(e, "{\"S\":");
        out_string(e, p, len);
        av_close(e);
        return 0;
    case LT_NUMBER:
    case LT_BIGNUM:
        if (number_value(e, idx, t, &num) < 0)
            return -1;
        OUT_LIT(e, "{\"N\":");
        out_number_string(e, &num);
        av_close(e);
        return 0;
    case LT_BOOL:
        if (lua_toboolean(L, idx))
            OUT_LIT(e, "{\"BOOL\":true}");
        else
            OUT_LIT(e, "{\"BOOL\":false}");
        return 0;
    case LT_NULL:
        OUT_LIT(e, "{\"NULL\":true}");
        return 0;
    case LT_BINARY:
        if (binary_bytes(e, idx, &p, &len) < 0)
            return -1;
        OUT_LIT(e, "{\"B\":");
        out_base64(e, p, len);
        av_close(e);
        return 0;
    case LT_SET:
        return enc_set(e, idx, s);
    case LT_LIST:
        if (enter_av(&e->w) < 0)
            return -1;
        OUT_LIT(e, "{\"L\":");
        rc = enc_items(e, idx, n, 0);
        av_close(e);
        e->w.av_depth--;
        return rc;
    case LT_MAP:
        if (enter_av(&e->w) < 0)
            return -1;
        OUT_LIT(e, "{\"M\":");
        rc = enc_members(e, idx, MM_AV);
        av_close(e);
        e->w.av_depth--;
        return rc;
    case LT_OTHER:
    default:
        return tide_codec_fail(&e->w, TIDE_EINVAL, "a %s value cannot be stored in DynamoDB",
                    luaL_typename(L, idx));
    }
}

/* Plain JSON for the value at idx (t, n from classify). */
static int enc_plain(struct enc *e, int idx, struct slot s, enum ltype t, size_t n)
{
    lua_State *L = e->w.L;
    size_t len;
    const char *p;
    double x;
    struct tide_ddb_number num;
    (void)s;

    switch (t) {
    case LT_BAD:
        return -1;
    case LT_STRING:
        if (check_utf8(e, idx, &p, &len) < 0)
            return -1;
        out_string(e, p, len);
        return 0;
    case LT_NUMBER:
        x = lua_tonumber(L, idx);
        if (!isfinite(x))
            return tide_codec_fail(&e->w, TIDE_EINVAL, "NaN and infinity are not valid JSON");
        return out_number(e, x);
    case LT_BIGNUM:
        if (bignum_value(e, idx, &num) < 0)
            return -1;
        if (!tide_ddb_number_to_lua(&num, &x))
            return tide_codec_fail(&e->w, TIDE_EINVAL,
                        "a tide.number beyond a double's precision can only be stored "
                        "inside AttributeValues");
        return out_number(e, x);
    case LT_BOOL:
        if (lua_toboolean(L, idx))
            OUT_LIT(e, "true");
        else
            OUT_LIT(e, "false");
        return 0;
    case LT_NULL:
        OUT_LIT(e, "null");
        return 0;
    case LT_BINARY:
        if (binary_bytes(e, idx, &p, &len) < 0)
            return -1;
        out_base64(e, p, len);
        return 0;
    case LT_SET:
        return tide_codec_fail(&e->w, TIDE_EINVAL,
                    "sets can only be stored inside AttributeValues (Item, Key, "
                    "ExpressionAttributeValues, ...)");
    case LT_LIST:
        return enc_items(e, idx, n, -1);
    case LT_MAP:
        return enc_members(e, idx, MM_FIELD);
    case LT_OTHER:
    default:
        return tide_codec_fail(&e->w, TIDE_EINVAL, "a %s value cannot be encoded as JSON",
                    luaL_typename(L, idx));
    }
}

/* The value at idx of the member s.key of a plain object: chooses by name
 * and shape whether it holds AttributeValues. */
static int enc_field(struct enc *e, int idx, struct slot s)
{
    size_t n;
    enum ltype t = classify(e, idx, &n);
    if (t == LT_BAD)
        return -1;
    enum tide_ddb_shape shape = t == LT_LIST  ? TIDE_DDB_SHAPE_ARRAY
                                : t == LT_MAP ? TIDE_DDB_SHAPE_OBJECT
                                              : TIDE_DDB_SHAPE_SCALAR;
    switch (tide_ddb_field_kind(s.key, s.klen, shape)) {
    case TIDE_DDB_AV_MAP:
        return enc_av_map(e, idx, s, t);
    case TIDE_DDB_AV_MAP_LIST:
    case TIDE_DDB_AV_LIST:
        return enc_items(e, idx, n,
                         tide_ddb_field_kind(s.key, s.klen, shape) == TIDE_DDB_AV_MAP_LIST);
    case TIDE_DDB_NAMED:
    case TIDE_DDB_NAMED_AV_LISTS:
        return enc_members(e, idx,
                           tide_ddb_field_kind(s.key, s.klen, shape) == TIDE_DDB_NAMED
                               ? MM_PLAIN
                               : MM_AV_LISTS);
    case TIDE_DDB_PLAIN:
    default:
        /* An array where DynamoDB wants attributes (Item = {1, 2}): say so
         * here rather than let DynamoDB answer with a SerializationException. */
        if (t == LT_LIST &&
            tide_ddb_field_kind(s.key, s.klen, TIDE_DDB_SHAPE_OBJECT) == TIDE_DDB_AV_MAP)
            return enc_av_map(e, idx, s, t);
        return enc_plain(e, idx, s, t, n);
    }
}

/* Pushes the encoder's output: // [.., json]. 0 when it ran out of memory. */
static int push_out(lua_State *L, struct guard *g)
{
    if (g->out.oom)
        return 0;
    lua_pushlstring(L, g->out.p ? g->out.p : "", g->out.len);
    return 1;
}

/* Pushes the encoder's output as a buffer (see lua_codec.h): // [.., buf].
 * 0 when it ran out of memory. */
static int push_out_buffer(lua_State *L, struct guard *g)
{
    if (g->out.oom)
        return 0;
    struct tide_buffer *b = lua_newuserdata(L, sizeof(*b) + g->out.len); // [.., buf]
    b->len = g->out.len;
    if (g->out.len > 0)
        memcpy(b->data, g->out.p, g->out.len);
    luaL_getmetatable(L, TIDE_BUFFER_MT); // [.., buf, mt]
    lua_setmetatable(L, -2);              // [.., buf]
    return 1;
}

/* Ends an encoding call: pushes the result (the JSON text, or nil and the
 * message) and gives the guard back. // [arg, guard, ...] -> [arg, guard, result...] */
static int enc_finish_with(lua_State *L, struct enc *e, struct guard *g, int rc,
                           int (*push)(lua_State *, struct guard *))
{
    lua_settop(L, 2);               // [arg, guard]
    if (rc == 0 && !push(L, g))
        rc = fail_oom(&e->w);
    tide_codec_guard_done(g);
    return rc == 0 ? 1 : tide_codec_push_fail(L, e->w.err.message);
}

static int enc_finish(lua_State *L, struct enc *e, struct guard *g, int rc)
{
    return enc_finish_with(L, e, g, rc, push_out);
}

/* encode_request and encode_request_buffer: params (argument 1) as the JSON
 * text of a request, handed out by push; frame is the entry point's
 * (TIDE_CODEC_FRAME). */
static int encode_params(lua_State *L, int (*push)(lua_State *, struct guard *), uintptr_t frame)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    struct guard *g = tide_codec_guard_acquire(L, lua_upvalueindex(UV_GUARD), frame);
    struct enc e;                   // [params, guard]
    enc_init(&e, L, "params", 0, g);
    size_t n;
    enum ltype t = classify(&e, 1, &n);
    return enc_finish_with(L, &e, g, enc_plain(&e, 1, ROOT, t, n), push);
}

/* core.encode_request(params) -> json | nil, err */
static int l_encode_request(lua_State *L)
{
    return encode_params(L, push_out, TIDE_CODEC_FRAME());
}

/* core.encode_request_buffer(params) -> buffer, length | nil, err: the same
 * JSON text as encode_request, in a buffer (see lua_codec.h); the length
 * comes along because #buffer is a metamethod call, which LuaJIT's JIT
 * compiles less well than reading a number. */
static int l_encode_request_buffer(lua_State *L)
{
    int nret = encode_params(L, push_out_buffer, TIDE_CODEC_FRAME());
    if (nret == 1) {
        const struct tide_buffer *b = lua_touserdata(L, -1);
        lua_pushnumber(L, (lua_Number)b->len); // [.., buf, len]
        nret = 2;
    }
    return nret;
}

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

/* core.encode_value(v) -> json of one AttributeValue | nil, err */
static int l_encode_value(lua_State *L)
{
    if (lua_isnoneornil(L, 1))
        return luaL_argerror(L, 1, "value expected");
    lua_settop(L, 1);
    struct guard *g = tide_codec_guard_acquire(L, lua_upvalueindex(UV_GUARD), TIDE_CODEC_FRAME());
    struct enc e;                   // [v, guard]
    enc_init(&e, L, "value", 1, g);
    return enc_finish(L, &e, g, enc_av(&e, 1, ROOT));
}

/* core.item_size(item) -> bytes | nil, err
 * Encodes the item and measures that text (ddb_limits.c, one pass of yajl):
 * the client asks only for items whose text could be over the limit. */
static int l_item_size(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    struct guard *g = tide_codec_guard_acquire(L, lua_upvalueindex(UV_GUARD), TIDE_CODEC_FRAME());
    struct enc e;                   // [item, guard]
    enc_init(&e, L, "item", 1, g);
    size_t n, size = 0;
    enum ltype t = classify(&e, 1, &n);
    int rc = t == LT_BAD ? -1 : enc_av_map(&e, 1, ROOT, t);
    lua_settop(L, 2);
    if (rc == 0 && g->out.oom)
        rc = fail_oom(&e.w);
    /* no Lua call in there: nothing can unwind through it */
    if (rc == 0 && tide_ddb_item_size(g->out.p, g->out.len, &size, &e.w.err) < 0)
        rc = -1;
    tide_codec_guard_done(g);
    if (rc < 0)
        return tide_codec_push_fail(L, e.w.err.message);
    lua_pushnumber(L, (lua_Number)size);
    return 1;
}

/* ---- value constructors and predicates ----------------------------------- */

static int has_mt(lua_State *L, int idx, int uv)
{
    if (!lua_getmetatable(L, idx)) // [mt]
        return 0;
    int same = lua_rawequal(L, -1, lua_upvalueindex(uv));
    lua_pop(L, 1);                 // []
    return same;
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

static int l_is_list(lua_State *L)
{
    lua_pushboolean(L, lua_istable(L, 1) && has_mt(L, 1, UV_LIST));
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

static int l_is_set(lua_State *L)
{
    lua_pushboolean(L, lua_istable(L, 1) && has_mt(L, 1, UV_SET));
    return 1;
}

/* core.binary(bytes) -> binary value */
static int l_binary(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TSTRING)
        return luaL_typerror(L, 1, "string");
    lua_createtable(L, 0, 1);                      // [.., b]
    lua_pushvalue(L, 1);                           // [.., b, bytes]
    lua_setfield(L, -2, "bytes");                  // [.., b]
    lua_pushvalue(L, lua_upvalueindex(UV_BINARY)); // [.., b, mt]
    lua_setmetatable(L, -2);                       // [.., b]
    return 1;
}

static int l_is_binary(lua_State *L)
{
    lua_pushboolean(L, lua_istable(L, 1) && has_mt(L, 1, UV_BINARY));
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
    if (!lua_istable(L, 1) || !has_mt(L, 1, UV_BINARY))
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
    size_t n = tide_ddb_number_format(&num, buf);
    lua_createtable(L, 0, 1);                      // [.., n]
    lua_pushlstring(L, buf, n);                    // [.., n, text]
    lua_setfield(L, -2, "value");                  // [.., n]
    lua_pushvalue(L, lua_upvalueindex(UV_NUMBER)); // [.., n, mt]
    lua_setmetatable(L, -2);                       // [.., n]
    return 1;
}

static int l_is_number(lua_State *L)
{
    lua_pushboolean(L, lua_istable(L, 1) && has_mt(L, 1, UV_NUMBER));
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

static int binary_tostring(lua_State *L)
{
    size_t len;
    const char *s = field_string(L, 1, "bytes", &len);
    if (s == NULL)
        return luaL_typerror(L, 1, "core.binary value");
    lua_pushlstring(L, s, len);
    return 1;
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
    size_t len;
    const char *s = field_string(L, 1, "value", &len);
    if (s == NULL)
        return luaL_typerror(L, 1, "tide.number");
    lua_pushlstring(L, s, len);
    return 1;
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
        {"encode_request", l_encode_request},
        {"encode_request_buffer", l_encode_request_buffer},
        {"is_buffer", l_is_buffer},
        {"decode_response", tide_codec_decode_response},
        {"encode_value", l_encode_value},
        {"decode_value", tide_codec_decode_value},
        {"decode_stream_records", tide_codec_decode_stream_records},
        {"item_size", l_item_size},
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
