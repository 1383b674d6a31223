/*
 * ddb_json_writer.c - compact JSON text into a growing buffer (see
 * ddb_json_writer.h). Parsing is yajl's job (ddb_decode.c, ddb_limits.c).
 */
#include "ddb_json_writer.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool tide_json_grow(struct tide_json_buf *b, size_t more)
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
            uint64_t q = w ^ (ones * '"'), bs = w ^ (ones * '\\');
            uint64_t hit = ((w - ones * 0x20) & ~w) | ((q - ones) & ~q) | ((bs - ones) & ~bs);
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

bool tide_json_add_real(struct tide_json_buf *b, double x)
{
    char raw[40], out[48];
    int n = snprintf(raw, sizeof(raw), "%.17g", x);
    if (n < 0 || (size_t)n >= sizeof(raw))
        return tide_json_add(b, "0.0", 3); /* not reached for a finite double */
    size_t len = 0;
    int has_dot = 0, has_e = 0;
    for (const char *p = raw; *p;) {
        char c = *p;
        if ((c >= '0' && c <= '9') || c == '-') {
            out[len++] = c;
            p++;
        } else if (c == 'e') {
            /* exponent: no '+', no leading zeros (one digit at least) */
            has_e = 1;
            out[len++] = 'e';
            p++;
            if (*p == '-')
                out[len++] = *p++;
            else if (*p == '+')
                p++;
            while (*p == '0' && p[1] >= '0' && p[1] <= '9')
                p++;
        } else {
            /* the decimal point, whatever the locale writes for it */
            has_dot = 1;
            out[len++] = '.';
            while (*p && !(*p >= '0' && *p <= '9') && *p != 'e' && *p != '-')
                p++;
        }
    }
    if (!has_dot && !has_e) {
        out[len++] = '.';
        out[len++] = '0';
    }
    return tide_json_add(b, out, len);
}
