/*
 * lua_decode.c - core.decode_response and core.decode_value: DynamoDB JSON
 * text to plain Lua values (conventions: docs/codec.md).
 *
 * yajl parses the text and calls back for every event (a map starts, a key,
 * a string, a number, ...); the callbacks build the Lua values as they go,
 * with no tree in between. A stack of frames, one per open object or array
 * (plus one per AttributeValue object), says how the next value is to be
 * decoded: the schema-driven modes below (which keys hold AttributeValue
 * maps, lists of them, ...; ddb_schema.c), an AttributeValue's type, or a
 * set's kind. The Lua tables being filled sit on the Lua stack, each object's
 * current key right above its table, so the path of an error ("Items[2].a")
 * is put together from the frames only when an error happens.
 *
 * Errors: JSON that is not well-formed stops the parse at once ("malformed
 * JSON at line L, column C (why)"). A value error ("Item.a: an S value must
 * be a string") stops the building but not the parse: the rest of the text
 * is still checked, so that malformed JSON anywhere wins over a value error,
 * as it did when a whole tree was parsed first.
 *
 * Checks on top of yajl's (jansson made them before, and the specs hold the
 * decoder to them): strings and keys must be strict UTF-8 (yajl's own check
 * lets overlong forms and encoded surrogates through), a \u escape must not
 * be half of a surrogate pair (yajl turns a lone one into '?' or a wrong
 * character), numbers must fit a double, the top level must be an object or
 * an array, and nesting stops at JSON_MAX_DEPTH.
 *
 * Resources: the parser handle is owned by the call's guard (see
 * lua_codec.h), so a Lua error raised inside a callback (out of memory, a
 * failing finalizer) cannot leak it; yajl allocates from the guard's arena;
 * everything else lives on the C stack or the Lua stack.
 */
#include "lua_codec.h"

#include <lauxlib.h>

#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ddb_limits.h"
#include "ddb_number.h"
#include "ddb_schema.h"
#include "ddb_text.h"
#include "error.h"

/* JSON nesting accepted at all (jansson's limit): beyond MAX_FRAMES path
 * elements the decoder stops building, but still reads the text this deep. */
#define JSON_MAX_DEPTH 2048
/* Frames: each path element is at most one object or array frame, plus an
 * AttributeValue frame above it, plus the root and a skip frame. */
#define MAX_DFRAMES (2 * MAX_FRAMES + 8)
/* Free Lua stack slots made sure of when a table is opened: the table, a
 * key, a value, and what building a value needs (a tide.number takes 3, a
 * binary's luaL_Buffer up to about LUA_MINSTACK / 2). */
#define SLOTS_PER_LEVEL 24
/* Tables are preallocated for as many entries as the last one closed at
 * the same depth (Items, Records: siblings look alike), up to these. */
#define HINT_MAX_MAP 256
#define HINT_MAX_ARRAY 1024

/* How the values inside an object or array are decoded. */
enum dec_mode {
    DM_FIELD,    /* plain, key matched against the schema */
    DM_PLAIN,    /* plain value */
    DM_AV,       /* one AttributeValue */
    DM_AV_MAP,   /* object of attribute name -> AttributeValue */
    DM_AV_LISTS, /* list of AV maps when an array, else plain */
    DM_JSON,     /* plain JSON all the way down: no key means anything */
};

enum fkind {
    F_OBJECT, /* a Lua table at tidx; the current key at tidx + 1 */
    F_ARRAY,  /* a list table at tidx */
    F_SET,    /* a set table at tidx */
    F_AV,     /* an AttributeValue object: no table, its value goes on the stack */
    F_SKIP,   /* an object or array read but not built: the value of a NULL
                 AttributeValue, or one that is wrong for its type */
};


/* The first bytes of an unknown type key kept for the message. */
#define UNKNOWN_KEPT 64

struct dframe {
    unsigned char kind;   /* enum fkind */
    unsigned char mode;   /* F_OBJECT, F_ARRAY: enum dec_mode of the values inside */
    unsigned char active; /* a member or item is being decoded: a path element */
    unsigned char type;   /* F_AV: enum tide_ddb_av_type, and AV_HAS_VALUE once its value
                             is on the Lua stack; F_SET: 'S', 'N' or 'B' */
    unsigned char av;     /* F_OBJECT, F_ARRAY: an M or L level (counted in
                             av_depth); F_AV: 0, or what is wrong with its value
                             (AV_BAD_VALUE, AV_BAD_TEXT), said when the object
                             ends unless the key comes again (the last value
                             wins); F_SKIP: a value (NULL) was pushed for it */
    int tidx;             /* Lua stack index of the table */
    int n;                /* F_ARRAY, F_SET: items so far; F_OBJECT: members so
                             far; F_SKIP: levels open */
};

struct dec {
    lua_State *L;
    yajl_handle h;
    const char *text;
    size_t len;
    const char *root;     /* name of the argument in paths */
    int prefix;           /* show root before the path */
    enum dec_mode root_mode;
    int nframes;
    int npath;            /* frames with active set */
    int av_depth;         /* nested L/M levels */
    int json_depth;       /* open objects and arrays */
    size_t root_end;      /* offset just past the top-level value, once read */
    int finishing;        /* inside yajl_complete_parse */
    int failed;           /* a value error is in err: nothing more is built */
    const char *json_why; /* set when a callback stopped the parse: why */
    size_t json_pos;      /* and where */
    int oom;
    size_t unknown_len;   /* the unknown type key of the F_AV that has one */
    char unknown[UNKNOWN_KEPT];
    struct tide_error err;
    struct dframe f[MAX_DFRAMES];
    /* sizes of the last object and array closed at each depth; only the
     * first hint_top entries are set (a small text touches a few) */
    int hint_top;
    unsigned short hint_map[MAX_DFRAMES], hint_arr[MAX_DFRAMES];
};

/* ---- errors ---------------------------------------------------------------- */

/* Stops the parse for text that is not JSON as the decoder accepts it. */
static int json_fail(struct dec *d, const char *why)
{
    size_t pos = d->finishing ? d->len : yajl_get_bytes_consumed(d->h);
    d->json_why = why;
    d->json_pos = pos < d->len ? pos : d->len;
    return 0;
}

/* Puts "<path>: <message>" in d->err, the path made of the active frames
 * (the keys are on the Lua stack). */
static void record_error(struct dec *d, int code, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

static void record_error(struct dec *d, int code, const char *fmt, va_list ap)
{
    struct walk w;
    tide_codec_walk_init(&w, d->L, d->root, d->prefix);
    for (int i = 0; i < d->nframes && w.nframes < MAX_FRAMES; i++) {
        const struct dframe *f = &d->f[i];
        if (!f->active)
            continue;
        struct frame *p = &w.frames[w.nframes++];
        if (f->kind == F_OBJECT) {
            p->key = lua_tolstring(d->L, f->tidx + 1, &p->len);
            p->index = 0;
        } else {
            p->key = NULL;
            p->len = 0;
            p->index = (size_t)f->n;
        }
    }
    tide_codec_failv(&w, code, fmt, ap);
    d->err = w.err;
}

/* Records a value error at the current path, like "Item.a: ..."; the parse
 * goes on (only checking the text). Returns 1 for yajl: continue. */
static int value_fail(struct dec *d, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int value_fail(struct dec *d, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    record_error(d, code, fmt, ap);
    va_end(ap);
    d->failed = 1;
    return 1;
}

/* F_AV frames: av says what is wrong with the value, said when the object
 * ends (jansson checked that an AttributeValue has one type key before
 * looking at its value; a repeated key replaces the value). */
#define AV_BAD_VALUE 1 /* of the wrong JSON type, or the type is unknown */
#define AV_BAD_TEXT 2  /* an error is in err already (N text, base64, depth) */

/* An error in the value itself of the AttributeValue on top (an invalid N
 * or B text, nesting too deep): kept until the object ends. Elsewhere (a
 * set member) it is a value error at once. */
static int av_value_fail(struct dec *d, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int av_value_fail(struct dec *d, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    record_error(d, code, fmt, ap);
    va_end(ap);
    struct dframe *p = &d->f[d->nframes - 1];
    if (p->kind == F_AV)
        p->av = AV_BAD_TEXT;
    else
        d->failed = 1;
    return 1;
}

static int fail_not_av(struct dec *d)
{
    return value_fail(d, TIDE_EINVAL,
                      "expected an AttributeValue (an object with one type key, e.g. {\"S\":\"x\"})");
}

static const char *const AV_NAMES[] = {"", "S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS"};

/* The value of an AttributeValue of type t has the wrong JSON type. */
static int fail_av_value(struct dec *d, enum tide_ddb_av_type t)
{
    switch (t) {
    case TIDE_DDB_AV_S: return value_fail(d, TIDE_EINVAL, "an S value must be a string");
    case TIDE_DDB_AV_N: return value_fail(d, TIDE_EINVAL, "an N value must be a string");
    case TIDE_DDB_AV_B: return value_fail(d, TIDE_EINVAL, "a B value must be a base64 string");
    case TIDE_DDB_AV_BOOL: return value_fail(d, TIDE_EINVAL, "a BOOL value must be true or false");
    case TIDE_DDB_AV_M: return value_fail(d, TIDE_EINVAL, "an M value must be an object");
    case TIDE_DDB_AV_L: return value_fail(d, TIDE_EINVAL, "an L value must be an array");
    default: return value_fail(d, TIDE_EINVAL, "a %s value must be an array", AV_NAMES[t]);
    }
}

/* A set member that is not a string. */
static int fail_member(struct dec *d, char kind)
{
    if (kind == 'N')
        return fail_av_value(d, TIDE_DDB_AV_N);
    if (kind == 'B')
        return fail_av_value(d, TIDE_DDB_AV_B);
    return value_fail(d, TIDE_EINVAL, "SS members must be strings");
}

/* ---- checks on the text ------------------------------------------------------ */

static unsigned hex4(const char *p)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v = v << 4 | (unsigned)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    return v;
}

/* yajl decodes a \uD800-\uDBFF escape that is not followed by a \uDC00-
 * \uDFFF one into '?' (dropping the next character) or into a wrong
 * character, and a lone \uDC00-\uDFFF into bytes that are not UTF-8. For a
 * string that had escapes, this finds the token yajl has just read (it ends
 * right before bytes_consumed; its opening quote is the nearest one before
 * that is not escaped, i.e. not preceded by an odd run of backslashes) and
 * checks that its \u escapes pair up. yajl has already checked that every
 * escape is well-formed. Returns 1 when they do. */
static int surrogates_ok(const struct dec *d)
{
    const char *t = d->text;
    size_t end = d->finishing ? 0 : yajl_get_bytes_consumed(d->h);
    if (end == 0 || end > d->len || t[end - 1] != '"')
        return 1; /* not in the text (cannot happen when parsing it in one go) */
    size_t close = end - 1, open = close;
    for (;;) {
        if (open == 0)
            return 1;
        open--;
        if (t[open] != '"')
            continue;
        size_t bs = 0;
        while (bs < open && t[open - 1 - bs] == '\\')
            bs++;
        if (bs % 2 == 0)
            break;
    }
    for (size_t i = open + 1; i < close; i++) {
        if (t[i] != '\\')
            continue;
        if (t[++i] != 'u')
            continue;
        unsigned cp = hex4(t + i + 1);
        i += 4; /* at the last hex digit */
        if (cp >= 0xDC00 && cp <= 0xDFFF)
            return 0;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (close - i <= 6 || t[i + 1] != '\\' || t[i + 2] != 'u')
                return 0;
            unsigned lo = hex4(t + i + 3);
            if (lo < 0xDC00 || lo > 0xDFFF)
                return 0;
            i += 6;
        }
    }
    return 1;
}

/* Whether the decoded string s may come from a surrogate escape: yajl
 * writes '?' for a lone high one, 4-byte UTF-8 (lead byte F0-F4) for a high
 * one followed by any \u escape, and ED A0-BF xx for a lone low one. So a
 * string with no '?' and no byte from ED up needs no look at its escapes;
 * most strings are such. */
static int may_hold_surrogate(const unsigned char *s, size_t len)
{
    if (memchr(s, '?', len) != NULL)
        return 1;
    for (size_t i = 0; i < len; i++) {
        while (len - i >= 8) { /* ASCII, eight bytes at a time */
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & UINT64_C(0x8080808080808080))
                break;
            i += 8;
        }
        if (i < len && s[i] >= 0xED)
            return 1;
    }
    return 0;
}

/* Checks a string or key yajl hands over: 1 when it is fine. */
static int text_ok(struct dec *d, const unsigned char *s, size_t len)
{
    /* yajl passes a pointer into the text unless the string had escapes */
    uintptr_t p = (uintptr_t)s, b = (uintptr_t)d->text;
    if ((p < b || p > b + d->len) && may_hold_surrogate(s, len) && !surrogates_ok(d))
        return json_fail(d, "a \\u escape is half of a UTF-16 surrogate pair");
    if (!tide_ddb_utf8_valid((const char *)s, len))
        return json_fail(d, "invalid UTF-8 in a string (overlong form, surrogate or out of range)");
    return 1;
}

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;

static void c_locale_init(void)
{
    c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
}

/* The double of the JSON number s[0..n) (yajl has checked its syntax),
 * whatever the C locale. 0, or -1 when it is beyond a double's range (an
 * error, as with jansson; tiny numbers become 0 or subnormal), -2 when out
 * of memory. */
static int to_double(const char *s, size_t n, double *out)
{
    size_t i = s[0] == '-';
    if (n - i <= 15) { /* an integer this short is exact in a double */
        int64_t v = 0;
        size_t k = i;
        for (; k < n && s[k] >= '0' && s[k] <= '9'; k++)
            v = v * 10 + (s[k] - '0');
        if (k == n) {
            double x = (double)v;
            *out = i ? -x : x;
            return 0;
        }
    }
    char small[64], *buf = small;
    if (n >= sizeof(small) && (buf = malloc(n + 1)) == NULL)
        return -2;
    memcpy(buf, s, n);
    buf[n] = '\0';
    pthread_once(&c_locale_once, c_locale_init);
    double x = c_locale != (locale_t)0 ? strtod_l(buf, NULL, c_locale) : strtod(buf, NULL);
    if (buf != small)
        free(buf);
    if (isinf(x))
        return -1;
    *out = x;
    return 0;
}

/* ---- building values --------------------------------------------------------- */

/* F_AV frames keep their type in the low bits of type, and this bit once
 * its value is on the Lua stack. */
#define AV_HAS_VALUE 0x80
#define AV_TYPE(f) ((enum tide_ddb_av_type)((f)->type & 0x7F))

static struct dframe *top(struct dec *d)
{
    return &d->f[d->nframes - 1];
}

/* A value is complete on top of the Lua stack: stores it where it belongs. */
static void finish_value(struct dec *d)
{
    if (d->nframes == 0)
        return; /* the root value: it stays on the stack */
    struct dframe *p = top(d);
    switch (p->kind) {
    case F_OBJECT:
        lua_rawset(d->L, p->tidx); // [t, k, v] -> [t]
        p->n++;
        p->active = 0;
        d->npath--;
        break;
    case F_ARRAY:
    case F_SET:
        lua_rawseti(d->L, p->tidx, p->n); // [t, v] -> [t]
        p->active = 0;
        d->npath--;
        break;
    case F_AV: /* its value stays on the stack until the object ends */
    default: p->type |= AV_HAS_VALUE; break;
    }
}

/* A value starts inside an array or a set: one more path element. 0 when
 * that is too deep (error recorded). */
static int enter_item(struct dec *d, struct dframe *p)
{
    if (d->npath >= MAX_FRAMES) {
        value_fail(d, TIDE_EINVAL, "nesting deeper than %d levels (a cyclic table?)", MAX_FRAMES);
        return 0;
    }
    p->n++;
    p->active = 1;
    d->npath++;
    return 1;
}

static struct dframe *push_dframe(struct dec *d, enum fkind kind)
{
    if (d->nframes >= MAX_DFRAMES) { /* not reached: MAX_FRAMES stops first */
        value_fail(d, TIDE_EINVAL, "nesting deeper than %d levels (a cyclic table?)", MAX_FRAMES);
        return NULL;
    }
    struct dframe *f = &d->f[d->nframes++];
    f->kind = (unsigned char)kind;
    f->mode = DM_PLAIN;
    f->active = 0;
    f->type = 0;
    f->av = 0;
    f->tidx = 0;
    f->n = 0;
    return f;
}

/* Opens a table for an object (F_OBJECT), an array (F_ARRAY, with the list
 * metatable) or a set (F_SET, kind is 'S', 'N' or 'B'). */
static int open_table(struct dec *d, enum fkind kind, enum dec_mode mode, int av, char set_kind)
{
    lua_State *L = d->L;
    int depth = d->nframes;
    if (av)
        d->av_depth++;
    struct dframe *f = push_dframe(d, kind);
    if (f == NULL)
        return 1;
    int hmap = depth < d->hint_top ? d->hint_map[depth] : 0;
    int harr = depth < d->hint_top ? d->hint_arr[depth] : 0;
    if (kind == F_OBJECT) {
        lua_createtable(L, 0, hmap);                 // [t]
    } else if (kind == F_ARRAY) {
        lua_createtable(L, harr, 0);                 // [t]
        lua_pushvalue(L, lua_upvalueindex(UV_LIST)); // [t, mt]
        lua_setmetatable(L, -2);                     // [t]
    } else {
        char k[3] = {set_kind, 'S', '\0'};
        lua_createtable(L, harr, 1);                 // [set]
        lua_pushliteral(L, "kind");                  // [set, "kind"]
        lua_pushlstring(L, k, 2);                    // [set, "kind", kind]
        lua_rawset(L, -3);                           // [set]
        f->type = (unsigned char)set_kind;
    }
    f->mode = (unsigned char)mode;
    f->av = (unsigned char)av;
    f->tidx = lua_gettop(L);
    return 1;
}

/* Pushes the number in the string s: a Lua number when it survives the
 * round trip, else a tide.number. // [n] */
static int push_ddb_number(struct dec *d, const char *s, size_t len)
{
    lua_State *L = d->L;
    struct tide_ddb_number num;
    struct tide_error err;
    double x;

    if (tide_ddb_number_parse(s, len, &num, &err) < 0)
        return av_value_fail(d, err.code, "%s", err.message);
    if (tide_ddb_number_to_lua(&num, &x)) {
        lua_pushnumber(L, x);
        finish_value(d);
        return 1;
    }
    char buf[TIDE_DDB_NUMBER_BUFSIZE];
    size_t n = tide_ddb_number_format(&num, buf);
    lua_createtable(L, 0, 1);                      // [n]
    lua_pushliteral(L, "value");                   // [n, k]
    lua_pushlstring(L, buf, n);                    // [n, k, text]
    lua_rawset(L, -3);                             // [n]
    lua_pushvalue(L, lua_upvalueindex(UV_NUMBER)); // [n, mt]
    lua_setmetatable(L, -2);                       // [n]
    finish_value(d);
    return 1;
}

/* Pushes the core.binary of the base64 string s. // [b] */
static int push_binary(struct dec *d, const char *s, size_t len)
{
    lua_State *L = d->L;
    if (tide_ddb_base64_decoded_len(s, len) < 0)
        return av_value_fail(d, TIDE_EINVAL, "a B value is not valid base64");

    lua_createtable(L, 0, 1);    // [b]
    lua_pushliteral(L, "bytes"); // [b, k]
    /* Decode straight into Lua's buffer, in whole base64 groups. */
    luaL_Buffer buf;
    luaL_buffinit(L, &buf);
    const size_t chunk = LUAL_BUFFERSIZE / 3 * 4;
    for (size_t off = 0; off < len; off += chunk) {
        size_t k = len - off < chunk ? len - off : chunk;
        long r = tide_ddb_base64_decode(s + off, k, (unsigned char *)luaL_prepbuffer(&buf));
        if (r < 0) {
            luaL_pushresult(&buf);
            lua_pop(L, 3); // []
            return av_value_fail(d, TIDE_EINVAL, "a B value is not valid base64");
        }
        luaL_addsize(&buf, (size_t)r);
    }
    luaL_pushresult(&buf);                         // [b, k, bytes]
    lua_rawset(L, -3);                             // [b]
    lua_pushvalue(L, lua_upvalueindex(UV_BINARY)); // [b, mt]
    lua_setmetatable(L, -2);                       // [b]
    finish_value(d);
    return 1;
}

/* ---- yajl's callbacks --------------------------------------------------------- */

enum scalar { SC_NULL, SC_BOOL, SC_NUMBER, SC_STRING };

/* A null, boolean, number or string. */
static int on_scalar(struct dec *d, enum scalar sc, int b, const char *s, size_t len)
{
    lua_State *L = d->L;
    double x = 0;

    if (d->json_depth == 0)
        return json_fail(d, "the top level must be an object or an array");
    if (sc == SC_NUMBER) {
        int rc = to_double(s, len, &x);
        if (rc == -2) {
            d->oom = 1;
            return json_fail(d, "out of memory");
        }
        if (rc < 0)
            return json_fail(d, "number beyond a double's range");
    } else if (sc == SC_STRING && !text_ok(d, (const unsigned char *)s, len)) {
        return 0;
    }
    if (d->failed)
        return 1;

    struct dframe *p = top(d);
    enum dec_mode mode;
    switch (p->kind) {
    case F_SKIP:
        return 1;
    case F_AV:
        switch (AV_TYPE(p)) {
        case TIDE_DDB_AV_S:
            if (sc != SC_STRING)
                break;
            lua_pushlstring(L, s, len);
            finish_value(d);
            return 1;
        case TIDE_DDB_AV_N:
            if (sc != SC_STRING)
                break;
            return push_ddb_number(d, s, len);
        case TIDE_DDB_AV_B:
            if (sc != SC_STRING)
                break;
            return push_binary(d, s, len);
        case TIDE_DDB_AV_BOOL:
            if (sc != SC_BOOL)
                break;
            lua_pushboolean(L, b);
            finish_value(d);
            return 1;
        case TIDE_DDB_AV_NULL:
            lua_pushlightuserdata(L, NULL);
            finish_value(d);
            return 1;
        default:
            break;
        }
        p->av = AV_BAD_VALUE; /* said when the object ends */
        return 1;
    case F_SET:
        if (!enter_item(d, p))
            return 1;
        if (sc != SC_STRING)
            return fail_member(d, (char)p->type);
        if (p->type == 'N')
            return push_ddb_number(d, s, len);
        if (p->type == 'B')
            return push_binary(d, s, len);
        lua_pushlstring(L, s, len);
        finish_value(d);
        return 1;
    case F_ARRAY:
        if (!enter_item(d, p))
            return 1;
        /* fall through */
    case F_OBJECT:
    default:
        mode = (enum dec_mode)p->mode;
        break;
    }
    if (mode == DM_AV)
        return fail_not_av(d);
    if (mode == DM_AV_MAP)
        return value_fail(d, TIDE_EINVAL, "expected an object of attribute name -> value");
    switch (sc) {
    case SC_NULL: lua_pushlightuserdata(L, NULL); break;
    case SC_BOOL: lua_pushboolean(L, b); break;
    case SC_NUMBER: lua_pushnumber(L, x); break;
    case SC_STRING:
    default: lua_pushlstring(L, s, len); break;
    }
    finish_value(d);
    return 1;
}

static int on_null(void *ctx)
{
    return on_scalar(ctx, SC_NULL, 0, NULL, 0);
}

static int on_boolean(void *ctx, int b)
{
    return on_scalar(ctx, SC_BOOL, b, NULL, 0);
}

static int on_number(void *ctx, const char *s, size_t len)
{
    return on_scalar(ctx, SC_NUMBER, 0, s, len);
}

static int on_string(void *ctx, const unsigned char *s, size_t len)
{
    return on_scalar(ctx, SC_STRING, 0, (const char *)s, len);
}

/* An object (is_map) or an array starts. */
static int on_open(struct dec *d, int is_map)
{
    if (++d->json_depth > JSON_MAX_DEPTH)
        return json_fail(d, "nesting deeper than 2048 levels");
    if (d->failed)
        return 1;
    if (!lua_checkstack(d->L, SLOTS_PER_LEVEL))
        return value_fail(d, TIDE_ENOMEM, "Lua stack exhausted");

    struct dframe *p = d->nframes > 0 ? top(d) : NULL;
    enum dec_mode mode = d->root_mode;
    if (p != NULL) {
        switch (p->kind) {
        case F_SKIP:
            p->n++;
            return 1;
        case F_AV: {
            enum tide_ddb_av_type t = AV_TYPE(p);
            int nested = (is_map && t == TIDE_DDB_AV_M) || (!is_map && t == TIDE_DDB_AV_L);
            if (nested && d->av_depth < TIDE_DDB_MAX_DEPTH)
                return open_table(d, is_map ? F_OBJECT : F_ARRAY, DM_AV, 1, 0);
            if (!is_map && (t == TIDE_DDB_AV_SS || t == TIDE_DDB_AV_NS || t == TIDE_DDB_AV_BS))
                return open_table(d, F_SET, DM_PLAIN, 0, AV_NAMES[t][0]);
            /* NULL takes any value; for the others it is wrong (said when
             * the object ends). Read it without building it. */
            int null = t == TIDE_DDB_AV_NULL;
            if (null)
                lua_pushlightuserdata(d->L, NULL);
            else if (nested)
                av_value_fail(d, TIDE_EINVAL,
                              "nesting deeper than %d levels (DynamoDB's limit; a cyclic table?)",
                              TIDE_DDB_MAX_DEPTH);
            else
                p->av = AV_BAD_VALUE;
            struct dframe *f = push_dframe(d, F_SKIP);
            if (f != NULL) {
                f->n = 1;
                f->av = (unsigned char)null;
            }
            return 1;
        }
        case F_SET:
            if (!enter_item(d, p))
                return 1;
            return fail_member(d, (char)p->type);
        case F_ARRAY:
            if (!enter_item(d, p))
                return 1;
            /* fall through */
        case F_OBJECT:
        default:
            mode = (enum dec_mode)p->mode;
            break;
        }
    }

    switch (mode) {
    case DM_AV:
        if (!is_map)
            return fail_not_av(d);
        if (push_dframe(d, F_AV) == NULL)
            return 1;
        return 1;
    case DM_AV_MAP:
        if (!is_map)
            return value_fail(d, TIDE_EINVAL, "expected an object of attribute name -> value");
        return open_table(d, F_OBJECT, DM_AV, 0, 0);
    case DM_AV_LISTS:
        return is_map ? open_table(d, F_OBJECT, DM_FIELD, 0, 0)
                      : open_table(d, F_ARRAY, DM_AV_MAP, 0, 0);
    case DM_JSON:
        return open_table(d, is_map ? F_OBJECT : F_ARRAY, DM_JSON, 0, 0);
    case DM_FIELD: {
        /* the member's key is on top of the Lua stack */
        size_t klen;
        const char *k = lua_tolstring(d->L, -1, &klen);
        switch (tide_ddb_field_kind(k, klen, is_map ? TIDE_DDB_SHAPE_OBJECT : TIDE_DDB_SHAPE_ARRAY)) {
        case TIDE_DDB_AV_MAP: return open_table(d, F_OBJECT, DM_AV, 0, 0);
        case TIDE_DDB_AV_MAP_LIST: return open_table(d, F_ARRAY, DM_AV_MAP, 0, 0);
        case TIDE_DDB_AV_LIST: return open_table(d, F_ARRAY, DM_AV, 0, 0);
        case TIDE_DDB_NAMED: return open_table(d, F_OBJECT, DM_PLAIN, 0, 0);
        case TIDE_DDB_NAMED_AV_LISTS: return open_table(d, F_OBJECT, DM_AV_LISTS, 0, 0);
        case TIDE_DDB_PLAIN:
        default: break;
        }
    }
        /* fall through */
    case DM_PLAIN:
    default:
        return is_map ? open_table(d, F_OBJECT, DM_FIELD, 0, 0)
                      : open_table(d, F_ARRAY, DM_PLAIN, 0, 0);
    }
}

static int on_start_map(void *ctx)
{
    return on_open(ctx, 1);
}

static int on_start_array(void *ctx)
{
    return on_open(ctx, 0);
}

static int on_map_key(void *ctx, const unsigned char *k, size_t len)
{
    struct dec *d = ctx;
    if (!text_ok(d, k, len))
        return 0;
    if (d->failed)
        return 1;
    struct dframe *p = top(d);
    if (p->kind == F_OBJECT) {
        if (d->npath >= MAX_FRAMES)
            return value_fail(d, TIDE_EINVAL, "nesting deeper than %d levels (a cyclic table?)",
                              MAX_FRAMES);
        lua_pushlstring(d->L, (const char *)k, len); // [t, k]
        p->active = 1;
        d->npath++;
        return 1;
    }
    if (p->kind != F_AV)
        return 1; /* F_SKIP */
    /* An AttributeValue has one type key; when it is repeated, the last
     * value wins. */
    enum tide_ddb_av_type t = tide_ddb_av_type(k, len);
    size_t kept = len < UNKNOWN_KEPT ? len : UNKNOWN_KEPT;
    if (AV_TYPE(p) != TIDE_DDB_AV_NONE) {
        if (t != AV_TYPE(p) ||
            (t == TIDE_DDB_AV_UNKNOWN && (len != d->unknown_len || memcmp(k, d->unknown, kept) != 0)))
            return fail_not_av(d);
        if (p->type & AV_HAS_VALUE)
            lua_pop(d->L, 1); /* the previous value */
        p->type = (unsigned char)t;
        p->av = t == TIDE_DDB_AV_UNKNOWN ? AV_BAD_VALUE : 0;
        return 1;
    }
    if (t == TIDE_DDB_AV_UNKNOWN) { /* said when the object ends: it might have more keys */
        memcpy(d->unknown, k, kept);
        d->unknown_len = len;
        p->av = AV_BAD_VALUE;
    }
    p->type = (unsigned char)t;
    return 1;
}

/* Records n in hints (hint_map or hint_arr) for the depth of the frame on
 * top, which is closing. */
static void set_hint(struct dec *d, unsigned short *hints, int n)
{
    int k = d->nframes - 1;
    for (; d->hint_top <= k; d->hint_top++)
        d->hint_map[d->hint_top] = d->hint_arr[d->hint_top] = 0;
    hints[k] = (unsigned short)n;
}

/* An object or an array ends. */
static int on_close(void *ctx)
{
    struct dec *d = ctx;
    if (--d->json_depth == 0)
        d->root_end = yajl_get_bytes_consumed(d->h);
    if (d->failed)
        return 1;
    struct dframe *p = top(d);
    switch (p->kind) {
    case F_SKIP:
        if (--p->n > 0)
            return 1;
        if (!p->av) { /* nothing was pushed: the F_AV below has its error */
            d->nframes--;
            return 1;
        }
        break;
    case F_AV:
        if (AV_TYPE(p) == TIDE_DDB_AV_NONE)
            return fail_not_av(d);
        if (AV_TYPE(p) == TIDE_DDB_AV_UNKNOWN) {
            size_t kept = d->unknown_len < UNKNOWN_KEPT ? d->unknown_len : UNKNOWN_KEPT;
            size_t n = kept > 20 ? tide_codec_utf8_cut(d->unknown, 20) : kept;
            return value_fail(d, TIDE_EINVAL, "unknown AttributeValue type \"%.*s\"", (int)n,
                              d->unknown);
        }
        if (p->av == AV_BAD_TEXT) { /* the message is in err */
            d->failed = 1;
            return 1;
        }
        if (p->av == AV_BAD_VALUE)
            return fail_av_value(d, AV_TYPE(p));
        break;
    case F_OBJECT:
        set_hint(d, d->hint_map, p->n < HINT_MAX_MAP ? p->n : HINT_MAX_MAP);
        if (p->av)
            d->av_depth--;
        break;
    case F_SET:
        set_hint(d, d->hint_arr, p->n < HINT_MAX_ARRAY ? p->n : HINT_MAX_ARRAY);
        lua_pushvalue(d->L, lua_upvalueindex(UV_SET)); // [set, mt]
        lua_setmetatable(d->L, -2);                    // [set]
        break;
    case F_ARRAY:
    default:
        set_hint(d, d->hint_arr, p->n < HINT_MAX_ARRAY ? p->n : HINT_MAX_ARRAY);
        if (p->av)
            d->av_depth--;
        break;
    }
    d->nframes--;
    finish_value(d);
    return 1;
}

static const yajl_callbacks CALLBACKS = {
    .yajl_null = on_null,
    .yajl_boolean = on_boolean,
    .yajl_number = on_number, /* raw text: no precision lost, no locale */
    .yajl_string = on_string,
    .yajl_start_map = on_start_map,
    .yajl_map_key = on_map_key,
    .yajl_end_map = on_close,
    .yajl_start_array = on_start_array,
    .yajl_end_array = on_close,
};

/* ---- the calls ------------------------------------------------------------------ */

/* Copies up to max bytes of text from its byte `from` into out (room for
 * max + 1), control characters shown as spaces, not cutting a UTF-8
 * sequence. Returns the number of bytes taken. */
static size_t excerpt(const char *text, size_t len, size_t from, size_t max, char *out)
{
    size_t n = len - from;
    if (n > max)
        n = tide_codec_utf8_cut(text + from, max);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)text[from + i];
        out[i] = c < 0x20 || c == 0x7f ? ' ' : (char)c;
    }
    out[n] = '\0';
    return n;
}

/* Pushes nil and a message for text that is not JSON: where (line, column
 * in characters, counted from 1) and why, then, when that is further in, the
 * text around it, and the beginning of the text. */
static int push_malformed(lua_State *L, const char *text, size_t len, size_t pos, const char *why)
{
    char head[81], near[61], msg[400];
    lua_pushnil(L);
    if (len == 0) {
        lua_pushliteral(L, "malformed JSON: the text is empty");
        return 2;
    }
    size_t line = 1, col = 1;
    for (size_t i = 0; i < pos; i++) {
        if (text[i] == '\n') {
            line++;
            col = 1;
        } else if (((unsigned char)text[i] & 0xC0) != 0x80) {
            col++;
        }
    }
    size_t hn = excerpt(text, len, 0, 80, head);
    int m = snprintf(msg, sizeof(msg), "malformed JSON at line %zu, column %zu (%s)", line, col, why);
    if (pos > 60 && m > 0 && (size_t)m < sizeof(msg)) {
        size_t from = pos - 30;
        while (from < pos && ((unsigned char)text[from] & 0xC0) == 0x80)
            from++;
        size_t nn = excerpt(text, len, from, 60, near);
        m += snprintf(msg + m, sizeof(msg) - (size_t)m, " near \"...%s%s\"", near,
                      from + nn < len ? "..." : "");
    }
    if (m > 0 && (size_t)m < sizeof(msg))
        snprintf(msg + m, sizeof(msg) - (size_t)m, "; the text begins: \"%s%s\"", head,
                 hn < len ? "..." : "");
    lua_pushstring(L, msg);
    return 2;
}

/* Offset of the first byte from pos on that is not JSON white space (or
 * what yajl's lexer skips as such). */
static size_t skip_space(const char *text, size_t len, size_t pos)
{
    for (; pos < len; pos++) {
        char c = text[pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != '\v' && c != '\f')
            break;
    }
    return pos;
}

/* Readies d to decode text; d->h is the caller's to set. */
static void dec_start(struct dec *d, lua_State *L, const char *text, size_t len, const char *root,
                      int prefix, enum dec_mode mode)
{
    d->L = L;
    d->text = text;
    d->len = len;
    d->root = root;
    d->prefix = prefix;
    d->root_mode = mode;
    d->nframes = d->npath = d->av_depth = d->json_depth = 0;
    d->hint_top = 0;
    d->root_end = 0;
    d->finishing = d->failed = d->oom = 0;
    d->json_why = NULL;
    d->json_pos = 0;
    tide_error_clear(&d->err);
}

/* Shared body of decode_response and decode_value; frame is theirs
 * (TIDE_CODEC_FRAME). */
static int decode(lua_State *L, const char *root, int prefix, enum dec_mode mode, uintptr_t frame)
{
    if (lua_type(L, 1) != LUA_TSTRING)
        return luaL_typerror(L, 1, "string");
    size_t len;
    const char *text = lua_tolstring(L, 1, &len);
    lua_settop(L, 1);
    if (len == 0)
        return push_malformed(L, text, len, 0, "");
    struct guard *g = tide_codec_guard_acquire(L, lua_upvalueindex(UV_GUARD), frame);
                                    // [text, guard]
    struct dec d;
    dec_start(&d, L, text, len, root, prefix, mode);

    /* yajl allocates from the guard's arena: no malloc for small texts */
    g->parser = d.h = yajl_alloc(&CALLBACKS, &g->afs, &d);
    if (d.h == NULL) {
        tide_codec_guard_done(g);
        return tide_codec_push_fail(L, "out of memory while parsing JSON");
    }
    yajl_config(d.h, yajl_dont_validate_strings, 0); /* the default, said out loud */

    yajl_status st = yajl_parse(d.h, (const unsigned char *)text, len); // [text, guard, ...]
    size_t pos = len;
    if (st == yajl_status_ok) {
        /* yajl_complete_parse flushes a token the lexer still holds and
         * says when the value is not finished: after a whole top-level
         * object or array and nothing but white space, it has nothing to
         * do (and a small text spends a good part of its time there). */
        if (d.root_end == 0 || skip_space(text, len, d.root_end) < len) {
            d.finishing = 1;
            st = yajl_complete_parse(d.h);
        }
    } else {
        pos = yajl_get_bytes_consumed(d.h);
    }
    if (st == yajl_status_ok) {
        /* yajl takes an unterminated string after the value for a token
         * still to come ({"a":1}"x): only white space may follow */
        pos = skip_space(text, len, d.root_end);
        if (pos < len) {
            d.json_why = "parse error: trailing garbage";
            d.json_pos = pos;
            st = yajl_status_error;
        }
    }
    if (st != yajl_status_ok) {
        char why[160];
        if (d.json_why != NULL) {
            snprintf(why, sizeof(why), "%s", d.json_why);
            pos = d.json_pos;
        } else {
            unsigned char *e = yajl_get_error(d.h, 0, (const unsigned char *)text, len);
            size_t n = e != NULL ? strcspn((const char *)e, "\n") : 0;
            snprintf(why, sizeof(why), "%.*s", (int)n, e != NULL ? (const char *)e : "");
            if (e != NULL)
                yajl_free_error(d.h, e);
        }
        tide_codec_guard_done(g);
        lua_settop(L, 2);
        if (d.oom)
            return tide_codec_push_fail(L, "out of memory while parsing JSON");
        return push_malformed(L, text, len, pos < len ? pos : len, why);
    }
    tide_codec_guard_done(g);
    if (d.failed) {
        lua_settop(L, 2);
        return tide_codec_push_fail(L, d.err.message);
    }
    /* yajl reports a complete text only after a whole top-level value */
    return 1; // [text, guard, result]
}

int tide_codec_decode_nested(lua_State *L, struct guard *g, const char *text, size_t len, int av)
{
    struct dec *d = g->nested_dec;
    if (d == NULL) {
        d = g->nested_dec = malloc(sizeof(*d));
        if (d == NULL)
            return 0;
    }
    if (g->nested_parser == NULL) {
        /* one parser for every text of the call: each is one whole object */
        g->nested_parser = yajl_alloc(&CALLBACKS, &g->afs, d);
        if (g->nested_parser == NULL)
            return 0;
        yajl_config(g->nested_parser, yajl_allow_multiple_values, 1);
    }
    int top = lua_gettop(L);
    dec_start(d, L, text, len, "value", 1, av ? DM_AV : DM_JSON);
    d->h = g->nested_parser;
    yajl_status st = yajl_parse(d->h, (const unsigned char *)text, len);
    /* Anything but one whole object or array and white space (a scalar, a
     * value cut short, a second value) may leave a token in the lexer that
     * would run into the next text: that parser is not used again. */
    if (st != yajl_status_ok || d->root_end == 0 || skip_space(text, len, d->root_end) < len) {
        yajl_free(g->nested_parser);
        g->nested_parser = NULL;
        lua_settop(L, top);
        return 0;
    }
    if (d->failed || lua_gettop(L) != top + 1) {
        lua_settop(L, top);
        return 0;
    }
    return 1;
}

int tide_codec_decode_response(lua_State *L)
{
    return decode(L, "response", 0, DM_PLAIN, TIDE_CODEC_FRAME());
}

int tide_codec_decode_value(lua_State *L)
{
    return decode(L, "value", 1, DM_AV, TIDE_CODEC_FRAME());
}
