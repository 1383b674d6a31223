/*
 * ddb_encode.c - the DynamoDB JSON encoder (see ddb_encode.h): one frame
 * per open object, array or set says how the values inside are written.
 */
#include "ddb_encode.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ddb_limits.h"
#include "ddb_text.h"

enum ekind { E_OBJECT, E_ARRAY, E_SET };

/* ---- output ---------------------------------------------------------------- */

/* Out of memory is sticky in the buffer and checked once at the end
 * (tide_ddb_enc_finish), so these return nothing. */
static void out_lit(struct tide_ddb_encoder *e, const char *s, size_t n)
{
    struct tide_json_buf *b = e->out;
    if (b->p != NULL && n <= b->cap - b->len) { /* a buffer kept from earlier calls has room */
        memcpy(b->p + b->len, s, n);
        b->len += n;
        return;
    }
    tide_json_add(b, s, n);
}

#define OUT_LIT(e, s) out_lit((e), (s), sizeof(s) - 1)

static void out_c(struct tide_ddb_encoder *e, char c)
{
    struct tide_json_buf *b = e->out;
    if (b->len < b->cap) {
        b->p[b->len++] = c;
        return;
    }
    tide_json_addc(b, c);
}

static void out_string(struct tide_ddb_encoder *e, const char *p, size_t n)
{
    tide_json_add_string(e->out, p, n);
}

/* |x| < 2^63 */
static void out_int(struct tide_ddb_encoder *e, long long x)
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

/* A plain number: integers stay integers (DynamoDB reads Limit, Segment,
 * ... as ints); others as jansson wrote them (so request bodies stay byte
 * for byte what they were), rare in DynamoDB requests. */
static void out_number(struct tide_ddb_encoder *e, double x)
{
    if (x == floor(x) && fabs(x) < 9.2e18)
        out_int(e, (long long)x);
    else
        tide_json_add_real(e->out, x);
}

/* The base64 of p[0..len) as a JSON string (nothing to escape), encoded
 * straight into the output buffer. */
static void out_base64(struct tide_ddb_encoder *e, const char *p, size_t len)
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

static void out_number_string(struct tide_ddb_encoder *e, const struct tide_ddb_number *num)
{
    char buf[TIDE_DDB_NUMBER_BUFSIZE];
    size_t n = tide_ddb_number_format(num, buf);
    out_string(e, buf, n);
}

/* ---- errors ------------------------------------------------------------------ */

static int failv(struct tide_ddb_encoder *e, int code, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

static int failv(struct tide_ddb_encoder *e, int code, const char *fmt, va_list ap)
{
    return tide_ddb_path_failv(&e->path, &e->err, code, fmt, ap);
}

int tide_ddb_enc_fail(struct tide_ddb_encoder *e, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    failv(e, code, fmt, ap);
    va_end(ap);
    return code;
}

#define FAIL(e, ...) tide_ddb_enc_fail((e), TIDE_EINVAL, __VA_ARGS__)

static int fail_not_av_map(struct tide_ddb_encoder *e, const char *got)
{
    return FAIL(e, "expected a table of attribute name -> value, got %s", got);
}

static int fail_member(struct tide_ddb_encoder *e, char set, const char *type_name)
{
    if (set == 'S')
        return FAIL(e, "SS members must be strings, not %s", type_name);
    if (set == 'N')
        return FAIL(e, "NS members must be numbers, not %s", type_name);
    return FAIL(e, "BS members must be core.binary values or strings");
}

static int fail_set_outside(struct tide_ddb_encoder *e)
{
    return FAIL(e, "sets can only be stored inside AttributeValues (Item, Key, "
                   "ExpressionAttributeValues, ...)");
}

static int check_utf8(struct tide_ddb_encoder *e, const char *p, size_t len)
{
    if (!tide_ddb_utf8_valid(p, len))
        return FAIL(e, "string is not valid UTF-8 (wrap bytes with core.binary)");
    return 0;
}

/* ---- where the next value is ------------------------------------------------- */

static struct tide_ddb_eframe *parent(struct tide_ddb_encoder *e)
{
    return e->n > 0 ? &e->f[e->n - 1] : NULL;
}

/* The mode the next value is written in, and its member name (NULL
 * otherwise). */
static enum tide_ddb_mode slot_mode(struct tide_ddb_encoder *e, const char **key, size_t *klen)
{
    const struct tide_ddb_eframe *p = parent(e);
    *key = NULL;
    *klen = 0;
    if (p == NULL)
        return e->root_mode;
    if (p->kind == E_OBJECT) {
        const struct tide_ddb_path_elem *el = &e->path.e[e->path.n - 1];
        *key = el->key;
        *klen = el->len;
    }
    return (enum tide_ddb_mode)p->mode;
}

static int enter(struct tide_ddb_encoder *e, const char *key, size_t len, size_t index)
{
    if (e->path.n >= TIDE_DDB_PATH_MAX)
        return FAIL(e, "nesting deeper than %d levels (a cyclic table?)", TIDE_DDB_PATH_MAX);
    struct tide_ddb_path_elem *el = &e->path.e[e->path.n++];
    el->key = key;
    el->len = len;
    el->index = index;
    el->cut = false;
    return 0;
}

int tide_ddb_enc_key(struct tide_ddb_encoder *e, const char *k, size_t n)
{
    struct tide_ddb_eframe *p = parent(e);
    if (!tide_ddb_utf8_valid(k, n))
        return FAIL(e, "a key is not valid UTF-8");
    int rc = enter(e, k, n, 0);
    if (rc < 0)
        return rc;
    if (p->count++ > 0)
        out_c(e, ',');
    out_string(e, k, n);
    out_c(e, ':');
    return 0;
}

int tide_ddb_enc_item(struct tide_ddb_encoder *e)
{
    struct tide_ddb_eframe *p = parent(e);
    int rc = enter(e, NULL, 0, p->count + 1);
    if (rc < 0)
        return rc;
    if (p->count++ > 0)
        out_c(e, ',');
    return 0;
}

/* A value is complete: its member or item is done. */
static int done(struct tide_ddb_encoder *e)
{
    if (e->n > 0)
        e->path.n--;
    return 0;
}

/* ---- sets ---------------------------------------------------------------------- */

/* Where the open set's member i is kept: small, or (from SMALL_SET on) the
 * scratch buffer. NULL when out of memory. */
static struct tide_ddb_set_member *member_slot(struct tide_ddb_encoder *e, size_t i)
{
    const size_t size = sizeof(struct tide_ddb_set_member);
    if (i < TIDE_DDB_ENC_SMALL_SET)
        return &e->small[i];
    struct tide_json_buf *s = e->scratch;
    if (i == TIDE_DDB_ENC_SMALL_SET) { /* the first that does not fit: move them all */
        s->len = 0;
        if (!tide_json_add(s, (const char *)e->small, sizeof(e->small)))
            return NULL;
    }
    if (!tide_json_reserve(s, size))
        return NULL;
    s->len += size;
    return (struct tide_ddb_set_member *)(void *)(s->p + i * size);
}

static int cmp_bytes(const void *a, const void *b)
{
    const struct tide_ddb_set_member *x = *(const struct tide_ddb_set_member *const *)a;
    const struct tide_ddb_set_member *y = *(const struct tide_ddb_set_member *const *)b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->p, y->p, n);
    return c != 0 ? c : (x->len > y->len) - (x->len < y->len);
}

static int cmp_numbers(const void *a, const void *b)
{
    const struct tide_ddb_set_member *x = *(const struct tide_ddb_set_member *const *)a;
    const struct tide_ddb_set_member *y = *(const struct tide_ddb_set_member *const *)b;
    return tide_ddb_number_compare(&x->num, &y->num);
}

/* Finds two equal members of the set that ends (n members). */
static int check_duplicates(struct tide_ddb_encoder *e, char kind, size_t n)
{
    struct tide_ddb_set_member *ms = e->small;
    struct tide_ddb_set_member *small_order[TIDE_DDB_ENC_SMALL_SET], **order = small_order;
    if (n > TIDE_DDB_ENC_SMALL_SET) {
        /* the pointers after the members, in the scratch buffer */
        struct tide_json_buf *s = e->scratch;
        size_t at = s->len;
        if (n > SIZE_MAX / sizeof(*order) || !tide_json_reserve(s, n * sizeof(*order)))
            return tide_ddb_enc_fail(e, TIDE_ENOMEM, "out of memory");
        ms = (struct tide_ddb_set_member *)(void *)s->p;
        order = (struct tide_ddb_set_member **)(void *)(s->p + at);
    }
    for (size_t i = 0; i < n; i++)
        order[i] = &ms[i];
    int (*cmp)(const void *, const void *) = kind == 'N' ? cmp_numbers : cmp_bytes;
    qsort(order, n, sizeof(*order), cmp);
    for (size_t i = 1; i < n; i++) {
        const struct tide_ddb_set_member *a = order[i - 1];
        if (cmp(&order[i - 1], &order[i]) != 0)
            continue;
        if (kind == 'S')
            return FAIL(e, "duplicate member \"%.*s\" in a set (DynamoDB rejects duplicates)",
                        (int)(a->len > 40 ? tide_ddb_utf8_cut(a->p, 40) : a->len), a->p);
        if (kind == 'N') {
            char buf[TIDE_DDB_NUMBER_BUFSIZE];
            tide_ddb_number_format(&a->num, buf);
            return FAIL(e, "duplicate member %s in a set (DynamoDB rejects duplicates)", buf);
        }
        return FAIL(e, "duplicate binary member in a set (DynamoDB rejects duplicates)");
    }
    return 0;
}

/* ---- values -------------------------------------------------------------------- */

/* The DynamoDB number of a number or decimal text. */
static int number_value(struct tide_ddb_encoder *e, const struct tide_ddb_scalar *v,
                        struct tide_ddb_number *num)
{
    struct tide_error err;
    int rc = v->type == TIDE_DDB_SCALAR_DECIMAL ? tide_ddb_number_parse(v->p, v->len, num, &err)
                                                : tide_ddb_number_from_double(v->x, num, &err);
    return rc < 0 ? tide_ddb_enc_fail(e, rc, "%s", err.message) : 0;
}

/* A member of the open set p. */
static int set_member(struct tide_ddb_encoder *e, struct tide_ddb_eframe *p,
                      const struct tide_ddb_scalar *v)
{
    struct tide_ddb_set_member m;
    int rc;
    if (p->set == 'S') {
        if (v->type != TIDE_DDB_SCALAR_STRING)
            return fail_member(e, 'S', v->type_name);
        if ((rc = check_utf8(e, v->p, v->len)) < 0)
            return rc;
        out_string(e, v->p, v->len);
    } else if (p->set == 'N') {
        if (v->type != TIDE_DDB_SCALAR_NUMBER && v->type != TIDE_DDB_SCALAR_DECIMAL)
            return fail_member(e, 'N', v->type_name);
        if ((rc = number_value(e, v, &m.num)) < 0)
            return rc;
        out_number_string(e, &m.num);
    } else {
        if (v->type != TIDE_DDB_SCALAR_BINARY && v->type != TIDE_DDB_SCALAR_STRING)
            return fail_member(e, 'B', v->type_name);
        out_base64(e, v->p, v->len);
    }
    m.p = v->p;
    m.len = v->len;
    struct tide_ddb_set_member *slot = member_slot(e, p->count - 1);
    if (slot == NULL)
        return tide_ddb_enc_fail(e, TIDE_ENOMEM, "out of memory");
    *slot = m;
    return done(e);
}

/* How an AttributeValue of each scalar type starts. */
static const struct {
    const char *text;
    size_t len;
} AV_OPEN[] = {
#define OPEN(s) {s, sizeof(s) - 1}
    [TIDE_DDB_SCALAR_STRING] = OPEN("{\"S\":"),
    [TIDE_DDB_SCALAR_NUMBER] = OPEN("{\"N\":"),
    [TIDE_DDB_SCALAR_DECIMAL] = OPEN("{\"N\":"),
    [TIDE_DDB_SCALAR_BOOL] = OPEN("{\"BOOL\":"),
    [TIDE_DDB_SCALAR_NULL] = OPEN("{\"NULL\":"),
    [TIDE_DDB_SCALAR_BINARY] = OPEN("{\"B\":"),
#undef OPEN
};

/* A scalar: one AttributeValue (av), or plain JSON. */
static int scalar(struct tide_ddb_encoder *e, const struct tide_ddb_scalar *v, bool av)
{
    struct tide_ddb_number num;
    double x = v->x;
    int rc = 0;
    switch (v->type) { /* first the checks */
    case TIDE_DDB_SCALAR_STRING:
        rc = check_utf8(e, v->p, v->len);
        break;
    case TIDE_DDB_SCALAR_NUMBER:
        if (av)
            rc = number_value(e, v, &num);
        else if (!isfinite(x))
            rc = FAIL(e, "NaN and infinity are not valid JSON");
        break;
    case TIDE_DDB_SCALAR_DECIMAL:
        if ((rc = number_value(e, v, &num)) == 0 && !av && !tide_ddb_number_to_lua(&num, &x))
            rc = FAIL(e, "a tide.number beyond a double's precision can only be stored "
                         "inside AttributeValues");
        break;
    case TIDE_DDB_SCALAR_OTHER:
        return FAIL(e, av ? "a %s value cannot be stored in DynamoDB"
                          : "a %s value cannot be encoded as JSON",
                    v->type_name);
    default:
        break;
    }
    if (rc < 0)
        return rc;
    if (av)
        out_lit(e, AV_OPEN[v->type].text, AV_OPEN[v->type].len);
    switch (v->type) {
    case TIDE_DDB_SCALAR_STRING:
        out_string(e, v->p, v->len);
        break;
    case TIDE_DDB_SCALAR_NUMBER:
    case TIDE_DDB_SCALAR_DECIMAL:
        if (av)
            out_number_string(e, &num);
        else
            out_number(e, x);
        break;
    case TIDE_DDB_SCALAR_BOOL:
        if (v->b)
            OUT_LIT(e, "true");
        else
            OUT_LIT(e, "false");
        break;
    case TIDE_DDB_SCALAR_NULL:
        if (av)
            OUT_LIT(e, "true");
        else
            OUT_LIT(e, "null");
        break;
    case TIDE_DDB_SCALAR_BINARY:
    default:
        out_base64(e, v->p, v->len);
        break;
    }
    if (av)
        out_c(e, '}');
    return done(e);
}

int tide_ddb_enc_scalar(struct tide_ddb_encoder *e, const struct tide_ddb_scalar *v)
{
    struct tide_ddb_eframe *p = parent(e);
    if (p != NULL && p->kind == E_SET)
        return set_member(e, p, v);
    const char *key;
    size_t klen;
    enum tide_ddb_mode mode = slot_mode(e, &key, &klen);
    if (mode == TIDE_DDB_MODE_AV_MAP)
        return fail_not_av_map(e, v->type_name);
    return scalar(e, v, mode == TIDE_DDB_MODE_AV);
}

static struct tide_ddb_eframe *push(struct tide_ddb_encoder *e, enum ekind kind,
                                    enum tide_ddb_mode mode, int av)
{
    struct tide_ddb_eframe *f = &e->f[e->n++]; /* the path bound keeps n in range */
    f->kind = (unsigned char)kind;
    f->mode = (unsigned char)mode;
    f->av = (unsigned char)av;
    f->set = 0;
    f->count = 0;
    return f;
}

int tide_ddb_enc_open(struct tide_ddb_encoder *e, enum tide_ddb_shape shape, const char *type_name)
{
    struct tide_ddb_eframe *p = parent(e);
    bool is_map = shape == TIDE_DDB_SHAPE_OBJECT;
    if (p != NULL && p->kind == E_SET)
        return fail_member(e, p->set, type_name);
    const char *key;
    size_t klen;
    enum tide_ddb_mode mode = slot_mode(e, &key, &klen);
    if (mode == TIDE_DDB_MODE_AV) {
        if (++e->av_depth > TIDE_DDB_MAX_DEPTH)
            return FAIL(e, "nesting deeper than %d levels (DynamoDB's limit; a cyclic table?)",
                        TIDE_DDB_MAX_DEPTH);
        if (is_map)
            OUT_LIT(e, "{\"M\":{");
        else
            OUT_LIT(e, "{\"L\":[");
        push(e, is_map ? E_OBJECT : E_ARRAY, TIDE_DDB_MODE_AV, 1);
        return 0;
    }
    enum tide_ddb_mode inner = tide_ddb_value_mode(mode, key, klen, shape);
    /* An array where DynamoDB wants attributes (Item = {1, 2}): say so here
     * rather than let DynamoDB answer with a SerializationException. */
    if (mode == TIDE_DDB_MODE_FIELD && !is_map && inner == TIDE_DDB_MODE_PLAIN &&
        tide_ddb_field_kind(key, klen, TIDE_DDB_SHAPE_OBJECT) == TIDE_DDB_AV_MAP)
        inner = TIDE_DDB_MODE_NOT_AV_MAP;
    if (inner == TIDE_DDB_MODE_NOT_AV_MAP)
        return fail_not_av_map(e, is_map ? type_name : "an array");
    out_c(e, is_map ? '{' : '[');
    push(e, is_map ? E_OBJECT : E_ARRAY, inner, 0);
    return 0;
}

int tide_ddb_enc_open_set(struct tide_ddb_encoder *e, const char *k, size_t n,
                          const char *type_name)
{
    struct tide_ddb_eframe *p = parent(e);
    if (p != NULL && p->kind == E_SET)
        return fail_member(e, p->set, type_name);
    const char *key;
    size_t klen;
    enum tide_ddb_mode mode = slot_mode(e, &key, &klen);
    if (mode == TIDE_DDB_MODE_AV_MAP)
        return fail_not_av_map(e, type_name);
    if (mode != TIDE_DDB_MODE_AV)
        return fail_set_outside(e);
    enum tide_ddb_av_type t = tide_ddb_av_type((const unsigned char *)k, n);
    if (t != TIDE_DDB_AV_SS && t != TIDE_DDB_AV_NS && t != TIDE_DDB_AV_BS)
        return FAIL(e, "set without a kind of \"SS\", \"NS\" or \"BS\"");
    out_c(e, '{');
    out_string(e, k, n);
    OUT_LIT(e, ":[");
    push(e, E_SET, TIDE_DDB_MODE_PLAIN, 0)->set = k[0];
    return 0;
}

int tide_ddb_enc_close(struct tide_ddb_encoder *e)
{
    struct tide_ddb_eframe *p = parent(e);
    int rc;
    switch (p->kind) {
    case E_OBJECT:
        out_c(e, '}');
        break;
    case E_ARRAY:
        out_c(e, ']');
        break;
    case E_SET:
    default:
        if (p->count == 0)
            return FAIL(e, "empty sets cannot be stored in DynamoDB");
        OUT_LIT(e, "]}");
        if ((rc = check_duplicates(e, p->set, p->count)) < 0)
            return rc;
        break;
    }
    if (p->av) {
        out_c(e, '}');
        e->av_depth--;
    }
    e->n--;
    return done(e);
}

void tide_ddb_encoder_init(struct tide_ddb_encoder *e, struct tide_json_buf *out,
                           struct tide_json_buf *scratch, enum tide_ddb_mode mode,
                           const char *root, bool prefix)
{
    e->out = out;
    e->scratch = scratch;
    e->root_mode = mode;
    e->av_depth = 0;
    e->n = 0;
    tide_ddb_path_init(&e->path, root, prefix);
    tide_error_clear(&e->err);
}

int tide_ddb_enc_finish(struct tide_ddb_encoder *e)
{
    if (e->out->oom || e->scratch->oom)
        return tide_ddb_enc_fail(e, TIDE_ENOMEM, "out of memory");
    return 0;
}
