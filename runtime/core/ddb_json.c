#include "ddb_json.h"

#include <errno.h>
#include <stdarg.h>
#include <locale.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ddb_text.h"

/* jansson's limit, kept so that the same texts parse. */
#define MAX_DEPTH 2048
#define FIRST_BLOCK 4096
#define MAX_BLOCK (1024 * 1024)

/* ---- arena ----------------------------------------------------------------- */

struct block {
    struct block *prev;
    size_t used, cap;
    _Alignas(max_align_t) unsigned char data[];
};

struct tide_json_arena {
    struct block *top;
};

static void *arena_alloc(struct tide_json_arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    struct block *b = a->top;
    if (b == NULL || b->cap - b->used < n) {
        size_t cap = b ? b->cap * 2 : FIRST_BLOCK;
        if (cap > MAX_BLOCK)
            cap = MAX_BLOCK;
        if (cap < n)
            cap = n;
        struct block *nb = malloc(sizeof(*nb) + cap);
        if (nb == NULL)
            return NULL;
        nb->prev = b;
        nb->used = 0;
        nb->cap = cap;
        a->top = b = nb;
    }
    void *p = b->data + b->used;
    b->used += n;
    return p;
}

void tide_json_free(struct tide_json_arena *arena)
{
    if (arena == NULL)
        return;
    struct block *b = arena->top;
    while (b) {
        struct block *prev = b->prev;
        free(b);
        b = prev;
    }
    free(arena);
}

/* ---- parser ---------------------------------------------------------------- */

struct parser {
    const char *start, *p, *end;
    struct tide_json_arena *arena;
    struct tide_json_error *err;
    bool failed;
};

/* Records the first error, at position at. Returns NULL. */
static void *perr(struct parser *ps, const char *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void *perr(struct parser *ps, const char *at, const char *fmt, ...)
{
    if (ps->failed)
        return NULL;
    ps->failed = true;
    int line = 1;
    const char *ls = ps->start;
    for (const char *q = ps->start; q < at && q < ps->end; q++) {
        if (*q == '\n') {
            line++;
            ls = q + 1;
        }
    }
    ps->err->line = line;
    ps->err->column = (int)(at - ls) + 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ps->err->text, sizeof(ps->err->text), fmt, ap);
    va_end(ap);
    return NULL;
}

static void skip_ws(struct parser *ps)
{
    const char *p = ps->p, *end = ps->end;
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    ps->p = p;
}

static struct tide_json *new_node(struct parser *ps, enum tide_json_type t)
{
    struct tide_json *j = arena_alloc(ps->arena, sizeof(*j));
    if (j == NULL)
        return perr(ps, ps->p, "out of memory");
    j->type = t;
    j->key = NULL;
    j->klen = 0;
    j->next = NULL;
    return j;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Reads the 4 hex digits at p; -1 when they are not. */
static long hex4(const char *p, const char *end)
{
    if (end - p < 4)
        return -1;
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p[i]);
        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    return v;
}

static size_t put_utf8(unsigned long cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Parses the string whose opening quote is at ps->p into *out / *outlen. */
static bool parse_string(struct parser *ps, const char **out, size_t *outlen)
{
    const char *s = ps->p + 1, *p = s, *end = ps->end;
    bool escapes = false, high = false;
    /* Find the closing quote; check control characters on the way. */
    for (;;) {
        while (p < end) {
            unsigned char c = (unsigned char)*p;
            if (c == '"' || c == '\\' || c < 0x20)
                break;
            high |= c >= 0x80;
            p++;
        }
        if (p >= end)
            return perr(ps, p, "premature end of input in a string"), false;
        if (*p == '"')
            break;
        if (*p == '\\') {
            escapes = true;
            p += 2; /* the escaped character is checked below */
            continue;
        }
        return perr(ps, p, "control character 0x%x in a string", (unsigned char)*p), false;
    }
    if (p > end)
        return perr(ps, end, "premature end of input in a string"), false;
    const char *close = p;
    if (high && !tide_ddb_utf8_valid(s, (size_t)(close - s)))
        return perr(ps, s, "invalid UTF-8 in a string"), false;
    ps->p = close + 1;
    if (!escapes) {
        *out = s;
        *outlen = (size_t)(close - s);
        return true;
    }
    /* Unescaped text is never longer than the escaped one. */
    char *buf = arena_alloc(ps->arena, (size_t)(close - s) + 1);
    if (buf == NULL)
        return perr(ps, s, "out of memory"), false;
    size_t n = 0;
    for (p = s; p < close;) {
        const char *q = memchr(p, '\\', (size_t)(close - p));
        if (q == NULL)
            q = close;
        memcpy(buf + n, p, (size_t)(q - p));
        n += (size_t)(q - p);
        if (q == close)
            break;
        char c = q[1];
        p = q + 2;
        switch (c) {
        case '"': buf[n++] = '"'; break;
        case '\\': buf[n++] = '\\'; break;
        case '/': buf[n++] = '/'; break;
        case 'b': buf[n++] = '\b'; break;
        case 'f': buf[n++] = '\f'; break;
        case 'n': buf[n++] = '\n'; break;
        case 'r': buf[n++] = '\r'; break;
        case 't': buf[n++] = '\t'; break;
        case 'u': {
            long cp = hex4(p, close);
            if (cp < 0)
                return perr(ps, q, "invalid escape"), false;
            p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                long lo = (close - p >= 6 && p[0] == '\\' && p[1] == 'u') ? hex4(p + 2, close) : -1;
                if (lo < 0xDC00 || lo > 0xDFFF)
                    return perr(ps, q, "invalid Unicode '\\u%04lX'", cp), false;
                p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return perr(ps, q, "invalid Unicode '\\u%04lX'", cp), false;
            }
            n += put_utf8((unsigned long)cp, buf + n);
            break;
        }
        default:
            return perr(ps, q, "invalid escape"), false;
        }
    }
    *out = buf;
    *outlen = n;
    return true;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static struct tide_json *parse_number(struct parser *ps)
{
    const char *s = ps->p, *p = s, *end = ps->end;
    bool dot = false;
    if (p < end && *p == '-')
        p++;
    if (p < end && *p == '0') {
        p++;
    } else if (p < end && is_digit(*p)) {
        while (p < end && is_digit(*p))
            p++;
    } else {
        return perr(ps, s, "invalid token");
    }
    if (p < end && *p == '.') {
        dot = true;
        p++;
        if (p >= end || !is_digit(*p))
            return perr(ps, s, "invalid real number");
        while (p < end && is_digit(*p))
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || !is_digit(*p))
            return perr(ps, s, "invalid real number");
        while (p < end && is_digit(*p))
            p++;
    }
    /* strtod needs a terminated copy: the text goes on after the number. */
    size_t n = (size_t)(p - s);
    char small[64], *copy = n < sizeof(small) ? small : malloc(n + 1);
    if (copy == NULL)
        return perr(ps, s, "out of memory");
    memcpy(copy, s, n);
    copy[n] = '\0';
    if (dot) {
        const char *point = localeconv()->decimal_point;
        if (point[0] != '.' && point[0] != '\0' && point[1] == '\0')
            *strchr(copy, '.') = point[0];
    }
    errno = 0;
    double v = strtod(copy, NULL);
    int overflow = (v == HUGE_VAL || v == -HUGE_VAL) && errno == ERANGE;
    if (copy != small)
        free(copy);
    if (overflow)
        return perr(ps, s, "real number overflow");
    struct tide_json *j = new_node(ps, TIDE_JSON_NUMBER);
    if (j == NULL)
        return NULL;
    j->u.number = v;
    ps->p = p;
    return j;
}

static struct tide_json *parse_value(struct parser *ps, int depth);

static struct tide_json *parse_container(struct parser *ps, int depth)
{
    bool obj = *ps->p == '{';
    char close = obj ? '}' : ']';
    if (depth > MAX_DEPTH)
        return perr(ps, ps->p, "maximum parsing depth reached");
    struct tide_json *c = new_node(ps, obj ? TIDE_JSON_OBJECT : TIDE_JSON_ARRAY);
    if (c == NULL)
        return NULL;
    c->u.kids.first = NULL;
    c->u.kids.n = 0;
    struct tide_json **tail = &c->u.kids.first;
    ps->p++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        return c;
    }
    for (;;) {
        const char *key = NULL;
        size_t klen = 0;
        if (obj) {
            if (ps->p >= ps->end || *ps->p != '"')
                return perr(ps, ps->p, "string or '}' expected");
            if (!parse_string(ps, &key, &klen))
                return NULL;
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':')
                return perr(ps, ps->p, "':' expected");
            ps->p++;
            skip_ws(ps);
        }
        struct tide_json *v = parse_value(ps, depth + 1);
        if (v == NULL)
            return NULL;
        v->key = key;
        v->klen = klen;
        *tail = v;
        tail = &v->next;
        c->u.kids.n++;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            skip_ws(ps);
            continue;
        }
        if (ps->p < ps->end && *ps->p == close) {
            ps->p++;
            return c;
        }
        return perr(ps, ps->p, obj ? "'}' expected" : "']' expected");
    }
}

static struct tide_json *literal(struct parser *ps, const char *word, size_t n,
                                 enum tide_json_type t)
{
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
        return perr(ps, ps->p, "invalid token");
    struct tide_json *j = new_node(ps, t);
    if (j)
        ps->p += n;
    return j;
}

static struct tide_json *parse_value(struct parser *ps, int depth)
{
    if (ps->p >= ps->end)
        return perr(ps, ps->p, "unexpected end of input");
    switch (*ps->p) {
    case '{':
    case '[':
        return parse_container(ps, depth);
    case '"': {
        const char *s;
        size_t n;
        if (!parse_string(ps, &s, &n))
            return NULL;
        struct tide_json *j = new_node(ps, TIDE_JSON_STRING);
        if (j) {
            j->u.str.p = s;
            j->u.str.len = n;
        }
        return j;
    }
    case 't': return literal(ps, "true", 4, TIDE_JSON_TRUE);
    case 'f': return literal(ps, "false", 5, TIDE_JSON_FALSE);
    case 'n': return literal(ps, "null", 4, TIDE_JSON_NULL);
    default: return parse_number(ps);
    }
}

struct tide_json *tide_json_parse(const char *text, size_t len, struct tide_json_arena **arena,
                                  struct tide_json_error *err)
{
    struct parser ps = {text, text, text + len, NULL, err, false};
    err->line = err->column = 0;
    err->text[0] = '\0';
    *arena = ps.arena = calloc(1, sizeof(*ps.arena));
    if (ps.arena == NULL)
        return perr(&ps, text, "out of memory");
    skip_ws(&ps);
    if (ps.p >= ps.end || (*ps.p != '{' && *ps.p != '['))
        return perr(&ps, ps.p, "'[' or '{' expected");
    struct tide_json *root = parse_container(&ps, 1);
    if (root == NULL)
        return NULL;
    skip_ws(&ps);
    if (ps.p != ps.end)
        return perr(&ps, ps.p, "end of file expected");
    return root;
}

/* ---- writer ---------------------------------------------------------------- */

bool tide_json_reserve(struct tide_json_buf *b, size_t more)
{
    if (b->oom)
        return false;
    if (more <= b->cap - b->len)
        return true;
    size_t cap = b->cap ? b->cap : 512;
    while (cap - b->len < more) {
        if (cap > SIZE_MAX / 2) {
            b->oom = true;
            return false;
        }
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (p == NULL) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

bool tide_json_add(struct tide_json_buf *b, const char *s, size_t n)
{
    if (!tide_json_reserve(b, n))
        return false;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return true;
}

bool tide_json_addc(struct tide_json_buf *b, char c)
{
    if (!tide_json_reserve(b, 1))
        return false;
    b->p[b->len++] = c;
    return true;
}

/* Which bytes need an escape: 0 none, else the letter after the backslash
 * ('u' for \u00XX). */
static const char ESCAPE[256] = {
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'b', 't', 'n', 'u', 'f', 'r', 'u', 'u',
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u',
    0, 0, '"', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, '\\', 0, 0, 0,
};

bool tide_json_add_string(struct tide_json_buf *b, const char *s, size_t n)
{
    /* Room for the common case (nothing to escape) in one go. */
    if (n > SIZE_MAX - 2 || !tide_json_reserve(b, n + 2))
        return false;
    b->p[b->len++] = '"';
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        const unsigned char *run = p;
        /* Eight bytes at a time while none is below 0x20, '"' or '\\'. */
        while (end - p >= 8) {
            uint64_t w;
            memcpy(&w, p, 8);
            const uint64_t ones = UINT64_C(0x0101010101010101), highs = ones * 0x80;
            uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');
            uint64_t hit = ((w - ones * 0x20) & ~w) | ((q - ones) & ~q) | ((b - ones) & ~b);
            if (hit & highs)
                break;
            p += 8;
        }
        while (p < end && !ESCAPE[*p])
            p++;
        if (p > run && !tide_json_add(b, (const char *)run, (size_t)(p - run)))
            return false;
        if (p == end)
            break;
        char e = ESCAPE[*p];
        if (e == 'u') {
            static const char hex[] = "0123456789ABCDEF";
            char seq[6] = {'\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15]};
            if (!tide_json_add(b, seq, 6))
                return false;
        } else {
            char seq[2] = {'\\', e};
            if (!tide_json_add(b, seq, 2))
                return false;
        }
        p++;
    }
    return tide_json_addc(b, '"');
}
