#include "ddb_limits.h"
#include "ddb_schema.h"

#include <string.h>

#include <yajl/yajl_parse.h>

#include "ddb_number.h"
#include "ddb_text.h"

/* Nested M/L levels measured; the codec never writes more than 32. */
#define MAX_LEVELS 64

/* What an open object or array of the text is. */
enum kind {
    K_MAP,  /* attribute name -> AttributeValue: the item, or an M value */
    K_AV,   /* an AttributeValue {"type": value} */
    K_LIST, /* an L value */
    K_SET,  /* an SS, NS or BS value */
};


struct level {
    unsigned char kind;
    unsigned char type; /* K_AV: its type; K_SET: TIDE_DDB_AV_SS, TIDE_DDB_AV_NS or TIDE_DDB_AV_BS */
    unsigned char per;  /* K_MAP: bytes per member besides name and value (0 item, 1 M) */
    unsigned char has;  /* K_AV: its value is measured */
    size_t total;       /* K_MAP, K_LIST, K_SET: the sum so far; K_AV: its value's size */
};

struct sizer {
    struct level st[2 * MAX_LEVELS + 6];
    int n;       /* entries of st in use */
    int nested;  /* M and L levels open */
    int root_av; /* the text is one AttributeValue, not an item */
    int done;
    int code;    /* 0, or the error stored in err */
    size_t result;
    struct tide_error *err;
};

static int bad(struct sizer *s, const char *what)
{
    if (s->code == 0)
        s->code = tide_error_set(s->err, TIDE_EINVAL, "item_size: %s", what);
    return 0; /* stops the parse */
}

static struct level *top(struct sizer *s)
{
    return s->n > 0 ? &s->st[s->n - 1] : NULL;
}

static struct level *push(struct sizer *s, enum kind kind)
{
    if (s->n >= (int)(sizeof(s->st) / sizeof(s->st[0]))) {
        bad(s, "value nested too deeply");
        return NULL;
    }
    struct level *l = &s->st[s->n++];
    memset(l, 0, sizeof(*l));
    l->kind = (unsigned char)kind;
    return l;
}

/* A value of size v is complete: it counts for the level holding it. */
static int value_done(struct sizer *s, size_t v)
{
    struct level *t = top(s);
    if (t == NULL) {
        s->result = v;
        s->done = 1;
        return 1;
    }
    switch (t->kind) {
    case K_AV:
        t->total = v;
        t->has = 1;
        break;
    case K_LIST: t->total += 1 + v; break;
    case K_MAP: /* the name and the per-member byte were added with the key */
    case K_SET:
    default: t->total += v; break;
    }
    return 1;
}

/* Size of a string of an S, N or B value (or set member). */
static int string_size(struct sizer *s, enum tide_ddb_av_type t, const unsigned char *p, size_t n)
{
    if (t == TIDE_DDB_AV_S || t == TIDE_DDB_AV_SS)
        return value_done(s, n);
    if (t == TIDE_DDB_AV_B || t == TIDE_DDB_AV_BS) {
        long b = tide_ddb_base64_decoded_len((const char *)p, n);
        if (b < 0)
            return bad(s, "invalid base64 in a B value");
        return value_done(s, (size_t)b);
    }
    struct tide_ddb_number num;
    int rc = tide_ddb_number_parse((const char *)p, n, &num, s->err);
    if (rc < 0) {
        s->code = rc;
        return 0;
    }
    return value_done(s, tide_ddb_number_size(&num));
}

static int on_string(void *ctx, const unsigned char *p, size_t n)
{
    struct sizer *s = ctx;
    struct level *t = top(s);
    if (t != NULL && t->kind == K_SET)
        return string_size(s, (enum tide_ddb_av_type)t->type, p, n);
    if (t == NULL || t->kind != K_AV || t->has)
        return bad(s, "expected an AttributeValue (an object with one type key)");
    switch (t->type) {
    case TIDE_DDB_AV_S:
    case TIDE_DDB_AV_B:
    case TIDE_DDB_AV_N: return string_size(s, (enum tide_ddb_av_type)t->type, p, n);
    case TIDE_DDB_AV_BOOL:
    case TIDE_DDB_AV_NULL: return value_done(s, 1);
    default: return bad(s, "expected a container in an M, L or set value");
    }
}

/* null, booleans and numbers: only as the value of a BOOL or NULL. */
static int on_scalar(struct sizer *s)
{
    struct level *t = top(s);
    if (t != NULL && t->kind == K_AV && !t->has && (t->type == TIDE_DDB_AV_BOOL || t->type == TIDE_DDB_AV_NULL))
        return value_done(s, 1);
    return bad(s, "expected a string in an AttributeValue");
}

static int on_null(void *ctx)
{
    return on_scalar(ctx);
}

static int on_boolean(void *ctx, int b)
{
    (void)b;
    return on_scalar(ctx);
}

static int on_number(void *ctx, const char *p, size_t n)
{
    (void)p;
    (void)n;
    return on_scalar(ctx);
}

static int on_start_map(void *ctx)
{
    struct sizer *s = ctx;
    struct level *t = top(s), *l;
    if (t == NULL)
        return push(s, s->root_av ? K_AV : K_MAP) != NULL;
    if (t->kind == K_MAP || t->kind == K_LIST)
        return push(s, K_AV) != NULL;
    if (t->kind != K_AV || t->type != TIDE_DDB_AV_M || t->has)
        return bad(s, "expected an object of attribute name -> AttributeValue");
    if (++s->nested > MAX_LEVELS)
        return bad(s, "value nested too deeply");
    if ((l = push(s, K_MAP)) == NULL)
        return 0;
    l->per = 1;
    return 1;
}

static int on_map_key(void *ctx, const unsigned char *k, size_t n)
{
    struct sizer *s = ctx;
    struct level *t = top(s);
    if (t->kind == K_MAP) {
        t->total += t->per + n;
        return 1;
    }
    /* K_AV: one type key */
    if (t->type != TIDE_DDB_AV_NONE)
        return bad(s, "expected an AttributeValue (an object with one type key)");
    t->type = (unsigned char)tide_ddb_av_type(k, n);
    if (t->type == TIDE_DDB_AV_UNKNOWN)
        return bad(s, "unknown AttributeValue type");
    return 1;
}

/* An object or an array ends: the item, an AttributeValue, an M or L value
 * (3 bytes more) or a set. */
static int on_end(void *ctx)
{
    struct sizer *s = ctx;
    struct level *t = top(s);
    size_t v = t->total;
    if (t->kind == K_AV && !t->has)
        return bad(s, "expected an AttributeValue (an object with one type key)");
    if (t->kind == K_LIST || (t->kind == K_MAP && t->per)) {
        v += 3;
        s->nested--;
    }
    s->n--;
    return value_done(s, v);
}

static int on_start_array(void *ctx)
{
    struct sizer *s = ctx;
    struct level *t = top(s), *l;
    if (t == NULL || t->kind != K_AV || t->has)
        return bad(s, "expected an AttributeValue (an object with one type key)");
    if (t->type == TIDE_DDB_AV_L) {
        if (++s->nested > MAX_LEVELS)
            return bad(s, "value nested too deeply");
        return push(s, K_LIST) != NULL;
    }
    if (t->type != TIDE_DDB_AV_SS && t->type != TIDE_DDB_AV_NS && t->type != TIDE_DDB_AV_BS)
        return bad(s, "expected an array only in an L or set value");
    if ((l = push(s, K_SET)) == NULL)
        return 0;
    l->type = t->type;
    return 1;
}

static const yajl_callbacks CALLBACKS = {
    .yajl_null = on_null,
    .yajl_boolean = on_boolean,
    .yajl_number = on_number,
    .yajl_string = on_string,
    .yajl_start_map = on_start_map,
    .yajl_map_key = on_map_key,
    .yajl_end_map = on_end,
    .yajl_start_array = on_start_array,
    .yajl_end_array = on_end,
};

static int measure(const char *json, size_t len, int root_av, size_t *out, struct tide_error *err)
{
    struct sizer s;
    s.n = 0;
    s.nested = 0;
    s.root_av = root_av;
    s.done = 0;
    s.code = 0;
    s.result = 0;
    s.err = err;

    yajl_handle h = yajl_alloc(&CALLBACKS, NULL, &s);
    if (h == NULL)
        return tide_error_set(err, TIDE_ENOMEM, "item_size: out of memory");
    yajl_status st = yajl_parse(h, (const unsigned char *)json, len);
    if (st == yajl_status_ok)
        st = yajl_complete_parse(h);
    if (st != yajl_status_ok && s.code == 0) {
        unsigned char *msg = yajl_get_error(h, 0, (const unsigned char *)json, len);
        size_t n = msg != NULL ? strcspn((const char *)msg, "\n") : 0;
        s.code = tide_error_set(err, TIDE_EINVAL, "item_size: cannot parse the item (%.*s)",
                                (int)n, msg != NULL ? (const char *)msg : "");
        if (msg != NULL)
            yajl_free_error(h, msg);
    }
    yajl_free(h);
    if (s.code == 0 && !s.done)
        bad(&s, "no value");
    if (s.code != 0)
        return s.code;
    *out = s.result;
    return 0;
}

int tide_ddb_item_size(const char *json, size_t len, size_t *out, struct tide_error *err)
{
    return measure(json, len, 0, out, err);
}

int tide_ddb_value_size(const char *json, size_t len, size_t *out, struct tide_error *err)
{
    return measure(json, len, 1, out, err);
}
