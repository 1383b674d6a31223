/*
 * ddb_decode.c - the DynamoDB JSON decoder (see ddb_decode.h): yajl's
 * callbacks, the frames that say how each value is read, and the messages
 * of malformed JSON and wrong values.
 */
#include "ddb_decode.h"

#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ddb_limits.h"
#include "ddb_number.h"
#include "ddb_text.h"

/* JSON nesting accepted at all (jansson's limit): beyond TIDE_DDB_PATH_MAX
 * path elements the decoder stops calling the visitor, but still reads the
 * text this deep. */
#define JSON_MAX_DEPTH 2048
/* Tables are announced with as many entries as the last one closed at the
 * same depth (Items, Records: siblings look alike), up to these. */
#define HINT_MAX_MAP 256
#define HINT_MAX_ARRAY 1024

enum fkind {
    F_OBJECT, /* an object the visitor has open; the current key in key */
    F_ARRAY,  /* an array (list) the visitor has open */
    F_SET,    /* a set the visitor has open */
    F_AV,     /* an AttributeValue object: nothing open, its value is the visitor's */
    F_SKIP,   /* an object or array read but not handed over: the value of a
                 NULL AttributeValue, or one that is wrong for its type */
};

/* F_AV frames: av says what is wrong with the value, said when the object
 * ends (jansson checked that an AttributeValue has one type key before
 * looking at its value; a repeated key replaces the value). F_OBJECT,
 * F_ARRAY: av is 1 for an M or L level (counted in av_depth). F_SKIP: av is
 * 1 when a value (NULL) was handed over for it. */
#define AV_BAD_VALUE 1 /* of the wrong JSON type, or the type is unknown */
#define AV_BAD_TEXT 2  /* an error is in err already (N text, base64, depth) */

/* F_AV frames keep their type in the low bits of type, and this bit once
 * the visitor has its value. */
#define AV_HAS_VALUE 0x80
#define AV_TYPE(f) ((enum tide_ddb_av_type)((f)->type & 0x7F))

static const char *const AV_NAMES[] = {"", "S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS"};

static struct tide_ddb_dframe *top(struct tide_ddb_decoder *d)
{
    return &d->f[d->nframes - 1];
}

/* ---- errors ---------------------------------------------------------------- */

/* Stops the parse for text that is not JSON as the decoder accepts it. */
static int json_fail(struct tide_ddb_decoder *d, const char *why)
{
    size_t pos = d->finishing ? d->len : yajl_get_bytes_consumed(d->h);
    d->json_why = why;
    d->json_pos = pos < d->len ? pos : d->len;
    return 0;
}

/* Puts "<path>: <message>" in d->err, the path made of the active frames. */
static void record_error(struct tide_ddb_decoder *d, int code, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

static void record_error(struct tide_ddb_decoder *d, int code, const char *fmt, va_list ap)
{
    struct tide_ddb_path path;
    tide_ddb_path_init(&path, d->root, d->prefix);
    for (int i = 0; i < d->nframes && path.n < TIDE_DDB_PATH_MAX; i++) {
        const struct tide_ddb_dframe *f = &d->f[i];
        if (!f->active)
            continue;
        struct tide_ddb_path_elem *p = &path.e[path.n++];
        bool object = f->kind == F_OBJECT;
        p->cut = object && f->key_kept && f->klen > TIDE_DDB_DEC_KEY_KEPT;
        p->key = object ? f->key : NULL;
        p->len = !object ? 0 : p->cut ? TIDE_DDB_DEC_KEY_KEPT : f->klen;
        p->index = (size_t)f->n;
    }
    tide_ddb_path_failv(&path, &d->err, code, fmt, ap);
}

/* Records a value error at the current path, like "Item.a: ...". When it
 * is about the value of the AttributeValue on top (an invalid N or B text,
 * nesting too deep: `deferred`), it is said only when the object ends;
 * otherwise at once, and the visitor is called no more. The parse goes on
 * (only checking the text). Returns 1 for yajl: continue. */
static int fail_value(struct tide_ddb_decoder *d, bool deferred, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail_value(struct tide_ddb_decoder *d, bool deferred, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    record_error(d, code, fmt, ap);
    va_end(ap);
    if (deferred && d->nframes > 0 && top(d)->kind == F_AV)
        top(d)->av = AV_BAD_TEXT;
    else
        d->failed = true;
    return 1;
}

#define value_fail(d, ...) fail_value((d), false, __VA_ARGS__)
#define av_value_fail(d, ...) fail_value((d), true, __VA_ARGS__)

static int fail_not_av(struct tide_ddb_decoder *d)
{
    return value_fail(d, TIDE_EINVAL,
                      "expected an AttributeValue (an object with one type key, e.g. {\"S\":\"x\"})");
}

static int fail_not_av_map(struct tide_ddb_decoder *d)
{
    return value_fail(d, TIDE_EINVAL, "expected an object of attribute name -> value");
}

static int fail_too_deep(struct tide_ddb_decoder *d)
{
    return value_fail(d, TIDE_EINVAL, "nesting deeper than %d levels (a cyclic table?)",
                      TIDE_DDB_PATH_MAX);
}

/* The value of an AttributeValue of type t has the wrong JSON type. */
static int fail_av_value(struct tide_ddb_decoder *d, enum tide_ddb_av_type t)
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
static int fail_member(struct tide_ddb_decoder *d, enum tide_ddb_container set)
{
    if (set == TIDE_DDB_SET_N)
        return fail_av_value(d, TIDE_DDB_AV_N);
    if (set == TIDE_DDB_SET_B)
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
static int surrogates_ok(const struct tide_ddb_decoder *d)
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

/* yajl passes a pointer into the text unless the string had escapes. */
static bool in_text(const struct tide_ddb_decoder *d, const void *s)
{
    uintptr_t p = (uintptr_t)s, b = (uintptr_t)d->text;
    return p >= b && p <= b + d->len;
}

/* Checks a string or key yajl hands over: 1 when it is fine. */
static int text_ok(struct tide_ddb_decoder *d, const unsigned char *s, size_t len)
{
    if (!in_text(d, s) && may_hold_surrogate(s, len) && !surrogates_ok(d))
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

/* ---- handing values over ----------------------------------------------------- */

/* A value has been handed over: tells the visitor where it goes. */
static void finish_value(struct tide_ddb_decoder *d)
{
    if (d->nframes == 0)
        return; /* the root value */
    struct tide_ddb_dframe *p = top(d);
    switch (p->kind) {
    case F_OBJECT:
        d->v->store(d->ud, TIDE_DDB_INTO_MEMBER, 0);
        p->n++;
        p->active = 0;
        d->npath--;
        break;
    case F_ARRAY:
    case F_SET:
        d->v->store(d->ud, TIDE_DDB_INTO_ITEM, (size_t)p->n);
        p->active = 0;
        d->npath--;
        break;
    case F_AV: /* the visitor keeps its value until the object ends */
    default: p->type |= AV_HAS_VALUE; break;
    }
}

/* A value starts inside an array or a set: one more path element. 0 when
 * that is too deep (error recorded). */
static int enter_item(struct tide_ddb_decoder *d, struct tide_ddb_dframe *p)
{
    if (d->npath >= TIDE_DDB_PATH_MAX) {
        fail_too_deep(d);
        return 0;
    }
    p->n++;
    p->active = 1;
    d->npath++;
    return 1;
}

static struct tide_ddb_dframe *push_dframe(struct tide_ddb_decoder *d, enum fkind kind)
{
    if (d->nframes >= TIDE_DDB_DEC_FRAMES) { /* not reached: the path bound stops first */
        fail_too_deep(d);
        return NULL;
    }
    struct tide_ddb_dframe *f = &d->f[d->nframes++];
    f->kind = (unsigned char)kind;
    f->mode = TIDE_DDB_MODE_PLAIN;
    f->active = 0;
    f->type = 0;
    f->av = 0;
    f->key_kept = 0;
    f->n = 0;
    return f;
}

/* Opens an object (F_OBJECT), an array (F_ARRAY) or a set (F_SET, of the
 * container c) with the visitor. */
static int open_container(struct tide_ddb_decoder *d, enum fkind kind, enum tide_ddb_mode mode,
                          int av, enum tide_ddb_container c)
{
    int depth = d->nframes;
    size_t hint = 0;
    if (depth < d->hint_top)
        hint = kind == F_OBJECT ? d->hint_map[depth] : d->hint_arr[depth];
    const char *why = d->v->open(d->ud, c, hint);
    if (why != NULL)
        return value_fail(d, TIDE_ENOMEM, "%s", why);
    if (av)
        d->av_depth++;
    struct tide_ddb_dframe *f = push_dframe(d, kind);
    if (f == NULL)
        return 1;
    f->mode = (unsigned char)mode;
    f->av = (unsigned char)av;
    f->type = (unsigned char)c;
    return 1;
}

static int open_table(struct tide_ddb_decoder *d, bool is_map, enum tide_ddb_mode mode, int av)
{
    return is_map ? open_container(d, F_OBJECT, mode, av, TIDE_DDB_OBJECT)
                  : open_container(d, F_ARRAY, mode, av, TIDE_DDB_ARRAY);
}

/* Hands over the number in the string s: a double when it survives the
 * round trip, else its canonical text. */
static int hand_number(struct tide_ddb_decoder *d, const char *s, size_t len)
{
    struct tide_ddb_number num;
    struct tide_error err;
    double x;

    if (tide_ddb_number_parse(s, len, &num, &err) < 0)
        return av_value_fail(d, err.code, "%s", err.message);
    if (tide_ddb_number_to_lua(&num, &x)) {
        d->v->number(d->ud, x);
    } else {
        char buf[TIDE_DDB_NUMBER_BUFSIZE];
        size_t n = tide_ddb_number_format(&num, buf);
        d->v->big_number(d->ud, buf, n);
    }
    finish_value(d);
    return 1;
}

/* Hands over the binary value of the base64 string s. */
static int hand_binary(struct tide_ddb_decoder *d, const char *s, size_t len)
{
    if (tide_ddb_base64_decoded_len(s, len) < 0 || !d->v->binary(d->ud, s, len))
        return av_value_fail(d, TIDE_EINVAL, "a B value is not valid base64");
    finish_value(d);
    return 1;
}

/* ---- yajl's callbacks --------------------------------------------------------- */

enum scalar { SC_NULL, SC_BOOL, SC_NUMBER, SC_STRING };

/* A scalar as what the JSON says it is. */
static void hand_plain(struct tide_ddb_decoder *d, enum scalar sc, int b, double x, const char *s,
                       size_t len)
{
    switch (sc) {
    case SC_NULL: d->v->null(d->ud); break;
    case SC_BOOL: d->v->boolean(d->ud, b != 0); break;
    case SC_NUMBER: d->v->number(d->ud, x); break;
    case SC_STRING:
    default: d->v->string(d->ud, s, len); break;
    }
    finish_value(d);
}

/* The value of the AttributeValue p. */
static int av_scalar(struct tide_ddb_decoder *d, struct tide_ddb_dframe *p, enum scalar sc, int b,
                     const char *s, size_t len)
{
    enum tide_ddb_av_type t = AV_TYPE(p);
    if (t == TIDE_DDB_AV_NULL) { /* whatever its value */
        hand_plain(d, SC_NULL, 0, 0, NULL, 0);
        return 1;
    }
    if ((t == TIDE_DDB_AV_S && sc == SC_STRING) || (t == TIDE_DDB_AV_BOOL && sc == SC_BOOL)) {
        hand_plain(d, sc, b, 0, s, len);
        return 1;
    }
    if (t == TIDE_DDB_AV_N && sc == SC_STRING)
        return hand_number(d, s, len);
    if (t == TIDE_DDB_AV_B && sc == SC_STRING)
        return hand_binary(d, s, len);
    p->av = AV_BAD_VALUE; /* said when the object ends */
    return 1;
}

/* A null, boolean, number or string. */
static int on_scalar(struct tide_ddb_decoder *d, enum scalar sc, int b, const char *s, size_t len)
{
    double x = 0;

    if (d->json_depth == 0)
        return json_fail(d, "the top level must be an object or an array");
    if (sc == SC_NUMBER) {
        int rc = to_double(s, len, &x);
        if (rc == -2) {
            d->oom = true;
            return json_fail(d, "out of memory");
        }
        if (rc < 0)
            return json_fail(d, "number beyond a double's range");
    } else if (sc == SC_STRING && !text_ok(d, (const unsigned char *)s, len)) {
        return 0;
    }
    if (d->failed)
        return 1;

    struct tide_ddb_dframe *p = top(d);
    switch (p->kind) {
    case F_SKIP:
        return 1;
    case F_AV:
        return av_scalar(d, p, sc, b, s, len);
    case F_SET:
        if (!enter_item(d, p))
            return 1;
        if (sc != SC_STRING)
            return fail_member(d, (enum tide_ddb_container)p->type);
        if (p->type == TIDE_DDB_SET_N)
            return hand_number(d, s, len);
        if (p->type == TIDE_DDB_SET_B)
            return hand_binary(d, s, len);
        hand_plain(d, sc, b, x, s, len);
        return 1;
    case F_ARRAY:
        if (!enter_item(d, p))
            return 1;
        break;
    case F_OBJECT:
    default:
        break;
    }
    if (p->mode == TIDE_DDB_MODE_AV)
        return fail_not_av(d);
    if (p->mode == TIDE_DDB_MODE_AV_MAP)
        return fail_not_av_map(d);
    if (sc == SC_NUMBER && d->exact)
        return hand_number(d, s, len);
    hand_plain(d, sc, b, x, s, len);
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

/* An object or array is the value of the AttributeValue p. */
static int av_open(struct tide_ddb_decoder *d, struct tide_ddb_dframe *p, bool is_map)
{
    enum tide_ddb_av_type t = AV_TYPE(p);
    int nested = (is_map && t == TIDE_DDB_AV_M) || (!is_map && t == TIDE_DDB_AV_L);
    if (nested && d->av_depth < TIDE_DDB_MAX_DEPTH)
        return open_table(d, is_map, TIDE_DDB_MODE_AV, 1);
    if (!is_map && (t == TIDE_DDB_AV_SS || t == TIDE_DDB_AV_NS || t == TIDE_DDB_AV_BS))
        return open_container(d, F_SET, TIDE_DDB_MODE_PLAIN, 0,
                              t == TIDE_DDB_AV_SS   ? TIDE_DDB_SET_S
                              : t == TIDE_DDB_AV_NS ? TIDE_DDB_SET_N
                                                    : TIDE_DDB_SET_B);
    /* NULL takes any value; for the others it is wrong (said when the
     * object ends). Read it without handing it over. */
    bool null = t == TIDE_DDB_AV_NULL;
    if (null)
        d->v->null(d->ud);
    else if (nested)
        av_value_fail(d, TIDE_EINVAL,
                      "nesting deeper than %d levels (DynamoDB's limit; a cyclic table?)",
                      TIDE_DDB_MAX_DEPTH);
    else
        p->av = AV_BAD_VALUE;
    struct tide_ddb_dframe *f = push_dframe(d, F_SKIP);
    if (f != NULL) {
        f->n = 1;
        f->av = (unsigned char)null;
    }
    return 1;
}

/* The key of the member being read in the object frame p. */
static void member_key(struct tide_ddb_dframe *p, const char **k, size_t *len)
{
    *k = p->key;
    *len = p->key_kept && p->klen > TIDE_DDB_DEC_KEY_KEPT ? 0 : p->klen; /* cut: matches nothing */
}

/* An object (is_map) or an array starts. */
static int on_open(struct tide_ddb_decoder *d, bool is_map)
{
    if (++d->json_depth > JSON_MAX_DEPTH)
        return json_fail(d, "nesting deeper than 2048 levels");
    if (d->failed)
        return 1;

    struct tide_ddb_dframe *p = d->nframes > 0 ? top(d) : NULL;
    enum tide_ddb_mode mode = d->root_mode;
    const char *key = NULL;
    size_t klen = 0;
    if (p != NULL) {
        switch (p->kind) {
        case F_SKIP:
            p->n++;
            return 1;
        case F_AV:
            return av_open(d, p, is_map);
        case F_SET:
            if (!enter_item(d, p))
                return 1;
            return fail_member(d, (enum tide_ddb_container)p->type);
        case F_ARRAY:
            if (!enter_item(d, p))
                return 1;
            mode = (enum tide_ddb_mode)p->mode;
            break;
        case F_OBJECT:
        default:
            mode = (enum tide_ddb_mode)p->mode;
            member_key(p, &key, &klen);
            break;
        }
    }
    if (mode == TIDE_DDB_MODE_AV) {
        if (!is_map)
            return fail_not_av(d);
        push_dframe(d, F_AV);
        return 1;
    }
    enum tide_ddb_mode inner = tide_ddb_value_mode(
        mode, key, klen, is_map ? TIDE_DDB_SHAPE_OBJECT : TIDE_DDB_SHAPE_ARRAY);
    if (inner == TIDE_DDB_MODE_NOT_AV_MAP)
        return fail_not_av_map(d);
    return open_table(d, is_map, inner, 0);
}

static int on_start_map(void *ctx)
{
    return on_open(ctx, true);
}

static int on_start_array(void *ctx)
{
    return on_open(ctx, false);
}

/* The key of the next member of the object frame p, kept for paths and the
 * schema: yajl's pointer when it is into the text (valid for the whole
 * parse), else a copy of its first bytes. */
static void keep_key(struct tide_ddb_decoder *d, struct tide_ddb_dframe *p, const unsigned char *k,
                     size_t len)
{
    p->klen = len;
    if (in_text(d, k)) {
        p->key = (const char *)k;
        p->key_kept = 0;
        return;
    }
    char *copy = d->kept[d->npath];
    memcpy(copy, k, len < TIDE_DDB_DEC_KEY_KEPT ? len : TIDE_DDB_DEC_KEY_KEPT);
    p->key = copy;
    p->key_kept = 1;
}

static int on_map_key(void *ctx, const unsigned char *k, size_t len)
{
    struct tide_ddb_decoder *d = ctx;
    if (!text_ok(d, k, len))
        return 0;
    if (d->failed)
        return 1;
    struct tide_ddb_dframe *p = top(d);
    if (p->kind == F_OBJECT) {
        if (d->npath >= TIDE_DDB_PATH_MAX)
            return fail_too_deep(d);
        keep_key(d, p, k, len);
        d->v->key(d->ud, (const char *)k, len);
        p->active = 1;
        d->npath++;
        return 1;
    }
    if (p->kind != F_AV)
        return 1; /* F_SKIP */
    /* An AttributeValue has one type key; when it is repeated, the last
     * value wins. */
    enum tide_ddb_av_type t = tide_ddb_av_type(k, len);
    size_t kept = len < TIDE_DDB_DEC_UNKNOWN_KEPT ? len : TIDE_DDB_DEC_UNKNOWN_KEPT;
    if (AV_TYPE(p) != TIDE_DDB_AV_NONE) {
        if (t != AV_TYPE(p) ||
            (t == TIDE_DDB_AV_UNKNOWN && (len != d->unknown_len || memcmp(k, d->unknown, kept) != 0)))
            return fail_not_av(d);
        if (p->type & AV_HAS_VALUE)
            d->v->drop(d->ud); /* the previous value */
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
static void set_hint(struct tide_ddb_decoder *d, unsigned short *hints, int n)
{
    int k = d->nframes - 1;
    for (; d->hint_top <= k; d->hint_top++)
        d->hint_map[d->hint_top] = d->hint_arr[d->hint_top] = 0;
    hints[k] = (unsigned short)n;
}

/* An AttributeValue object ends: 1 when its value is fine. */
static int av_close(struct tide_ddb_decoder *d, struct tide_ddb_dframe *p)
{
    if (AV_TYPE(p) == TIDE_DDB_AV_NONE)
        return !fail_not_av(d);
    if (AV_TYPE(p) == TIDE_DDB_AV_UNKNOWN) {
        size_t kept = d->unknown_len < TIDE_DDB_DEC_UNKNOWN_KEPT ? d->unknown_len
                                                                 : TIDE_DDB_DEC_UNKNOWN_KEPT;
        size_t n = kept > 20 ? tide_ddb_utf8_cut(d->unknown, 20) : kept;
        return !value_fail(d, TIDE_EINVAL, "unknown AttributeValue type \"%.*s\"", (int)n,
                           d->unknown);
    }
    if (p->av == AV_BAD_TEXT) { /* the message is in err */
        d->failed = true;
        return 0;
    }
    if (p->av == AV_BAD_VALUE)
        return !fail_av_value(d, AV_TYPE(p));
    return 1;
}

/* An object or an array ends. */
static int on_close(void *ctx)
{
    struct tide_ddb_decoder *d = ctx;
    if (--d->json_depth == 0)
        d->root_end = yajl_get_bytes_consumed(d->h);
    if (d->failed)
        return 1;
    struct tide_ddb_dframe *p = top(d);
    switch (p->kind) {
    case F_SKIP:
        if (--p->n > 0)
            return 1;
        if (!p->av) { /* nothing was handed over: the F_AV below has its error */
            d->nframes--;
            return 1;
        }
        break;
    case F_AV:
        if (!av_close(d, p))
            return 1;
        break;
    case F_OBJECT:
        set_hint(d, d->hint_map, p->n < HINT_MAX_MAP ? p->n : HINT_MAX_MAP);
        if (p->av)
            d->av_depth--;
        d->v->close(d->ud, TIDE_DDB_OBJECT);
        break;
    case F_SET:
    case F_ARRAY:
    default:
        set_hint(d, d->hint_arr, p->n < HINT_MAX_ARRAY ? p->n : HINT_MAX_ARRAY);
        if (p->av)
            d->av_depth--;
        d->v->close(d->ud, (enum tide_ddb_container)p->type);
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

/* ---- malformed JSON ------------------------------------------------------------- */

/* Copies up to max bytes of text from its byte `from` into out (room for
 * max + 1), control characters shown as spaces, not cutting a UTF-8
 * sequence. Returns the number of bytes taken. */
static size_t excerpt(const char *text, size_t len, size_t from, size_t max, char *out)
{
    size_t n = len - from;
    if (n > max)
        n = tide_ddb_utf8_cut(text + from, max);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)text[from + i];
        out[i] = c < 0x20 || c == 0x7f ? ' ' : (char)c;
    }
    out[n] = '\0';
    return n;
}

/* The message for text that is not JSON: where (line, column in
 * characters, counted from 1) and why, then, when that is further in, the
 * text around it, and the beginning of the text. */
static int fail_malformed(struct tide_error *err, const char *text, size_t len, size_t pos,
                          const char *why)
{
    char head[81], near[61], msg[400];
    if (len == 0)
        return tide_error_set(err, TIDE_EINVAL, "malformed JSON: the text is empty");
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
    return tide_error_set(err, TIDE_EINVAL, "%s", msg);
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

/* ---- the calls -------------------------------------------------------------------- */

void tide_ddb_decoder_init(struct tide_ddb_decoder *d, const yajl_alloc_funcs *afs, bool reuse)
{
    d->h = NULL;
    d->afs = afs;
    d->reuse = reuse;
}

void tide_ddb_decoder_close(struct tide_ddb_decoder *d)
{
    if (d->h != NULL) {
        yajl_free(d->h); /* returns its memory through afs */
        d->h = NULL;
    }
}

static void start(struct tide_ddb_decoder *d, const char *text, size_t len, enum tide_ddb_mode mode,
                  const char *root, bool prefix, const struct tide_ddb_visitor *v, void *ud)
{
    d->v = v;
    d->ud = ud;
    d->text = text;
    d->len = len;
    d->root = root;
    d->prefix = prefix;
    d->root_mode = mode;
    d->nframes = d->npath = d->av_depth = d->json_depth = 0;
    d->hint_top = 0;
    d->root_end = 0;
    d->finishing = d->failed = d->oom = false;
    d->json_why = NULL;
    d->json_pos = 0;
    tide_error_clear(&d->err);
}

/* The why of yajl's own error message (its first line). */
static void yajl_why(struct tide_ddb_decoder *d, char *why, size_t cap)
{
    unsigned char *e = yajl_get_error(d->h, 0, (const unsigned char *)d->text, d->len);
    size_t n = e != NULL ? strcspn((const char *)e, "\n") : 0;
    snprintf(why, cap, "%.*s", (int)n, e != NULL ? (const char *)e : "");
    if (e != NULL)
        yajl_free_error(d->h, e);
}

int tide_ddb_decode(struct tide_ddb_decoder *d, const char *text, size_t len,
                    enum tide_ddb_mode mode, const char *root, bool prefix,
                    const struct tide_ddb_visitor *v, void *ud, struct tide_error *err)
{
    if (len == 0)
        return fail_malformed(err, text, len, 0, "");
    if (!d->reuse)
        tide_ddb_decoder_close(d); /* a parser reads one text */
    if (d->h == NULL) {
        d->h = yajl_alloc(&CALLBACKS, (yajl_alloc_funcs *)d->afs, d);
        if (d->h == NULL)
            return tide_error_set(err, TIDE_ENOMEM, "out of memory while parsing JSON");
        if (d->reuse) /* each text is one whole object: the next follows */
            yajl_config(d->h, yajl_allow_multiple_values, 1);
    }
    bool exact = mode == TIDE_DDB_MODE_JSON_EXACT;
    start(d, text, len, exact ? TIDE_DDB_MODE_JSON : mode, root, prefix, v, ud);
    d->exact = exact;

    yajl_status st = yajl_parse(d->h, (const unsigned char *)text, len);
    size_t pos = len;
    if (st == yajl_status_ok) {
        /* yajl_complete_parse flushes a token the lexer still holds and
         * says when the value is not finished: after a whole top-level
         * object or array and nothing but white space, it has nothing to
         * do (and a small text spends a good part of its time there). A
         * reused parser is never completed: it takes the next text. */
        if (d->root_end == 0 || skip_space(text, len, d->root_end) < len) {
            if (d->reuse) {
                st = yajl_status_error;
                d->json_why = "not one whole object or array";
                d->json_pos = len;
            } else {
                d->finishing = true;
                st = yajl_complete_parse(d->h);
            }
        }
    } else {
        pos = yajl_get_bytes_consumed(d->h);
    }
    if (st == yajl_status_ok) {
        /* yajl takes an unterminated string after the value for a token
         * still to come ({"a":1}"x): only white space may follow */
        pos = skip_space(text, len, d->root_end);
        if (pos < len) {
            d->json_why = "parse error: trailing garbage";
            d->json_pos = pos;
            st = yajl_status_error;
        }
    }
    if (st != yajl_status_ok) {
        char why[160];
        if (d->json_why != NULL) {
            snprintf(why, sizeof(why), "%s", d->json_why);
            pos = d->json_pos;
        } else {
            yajl_why(d, why, sizeof(why));
        }
        /* a parser that stopped in the middle may hold a token that would
         * run into the next text */
        if (d->reuse)
            tide_ddb_decoder_close(d);
        if (d->oom)
            return tide_error_set(err, TIDE_ENOMEM, "out of memory while parsing JSON");
        return fail_malformed(err, text, len, pos < len ? pos : len, why);
    }
    if (d->failed) {
        *err = d->err;
        return err->code;
    }
    /* yajl reports a complete text only after a whole top-level value */
    return 0;
}
