/*
 * input_check.c - UTF-8 validity and strict JSON, see input_check.h.
 */
#include "input_check.h"

#include <string.h>
#include <yajl/yajl_parse.h>

int tide_utf8_check(const char *str, size_t n, size_t *bad)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        unsigned int min, cp;
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2, min = 0x80, cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3, min = 0x800, cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4, min = 0x10000, cp = c & 0x07;
        } else {
            goto invalid;
        }
        if (n - i < len)
            goto invalid;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                goto invalid;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            goto invalid;
        i += len;
    }
    return 0;
invalid:
    if (bad != NULL)
        *bad = i;
    return TIDE_EINVAL;
}

/* yajl converts numbers only for these callbacks, and refuses a number
 * that overflows (an integer past 64 bits, a double past DBL_MAX, which
 * lua-cjson would turn into inf). */
static int on_integer(void *ctx, long long v)
{
    (void)ctx, (void)v;
    return 1;
}

static int on_double(void *ctx, double v)
{
    (void)ctx, (void)v;
    return 1;
}

static const yajl_callbacks NUMBERS = {
    .yajl_integer = on_integer,
    .yajl_double = on_double,
};

int tide_json_parse(yajl_handle h, const char *s, size_t n, size_t *offset,
                    struct tide_error *err)
{
    const unsigned char *text = (const unsigned char *)s;
    yajl_status st = yajl_parse(h, text, n);
    size_t at = yajl_get_bytes_consumed(h);
    if (st == yajl_status_ok) {
        st = yajl_complete_parse(h);
        at = n;
    }
    if (st == yajl_status_ok)
        return 0;
    int rc;
    /* yajl counts the byte that broke the rule as consumed */
    if (at > 0 && at <= n && st == yajl_status_error)
        at--;
    const void *nul = memchr(s, '\0', n);
    if (nul != NULL && (size_t)((const char *)nul - s) <= at) {
        at = (size_t)((const char *)nul - s);
        rc = tide_error_set(err, TIDE_EINVAL, "a NUL byte");
    } else {
        unsigned char *msg = yajl_get_error(h, 0, text, n);
        const char *m = msg != NULL ? (const char *)msg : "invalid JSON";
        /* "lexical error: invalid char in json text.\n" -> its first line */
        size_t len = strcspn(m, "\n");
        while (len > 0 && (m[len - 1] == '.' || m[len - 1] == ' '))
            len--;
        rc = tide_error_set(err, TIDE_EINVAL, "%.*s", (int)len, m);
        if (msg != NULL)
            yajl_free_error(h, msg);
    }
    if (offset != NULL)
        *offset = at;
    return rc;
}

int tide_json_check(const char *s, size_t n, size_t *offset, struct tide_error *err)
{
    /* Only the grammar is checked (and, by yajl's default, that strings
     * are valid UTF-8) and the numbers' range. */
    yajl_handle h = yajl_alloc(&NUMBERS, NULL, NULL);
    if (h == NULL)
        return tide_error_set(err, TIDE_ENOMEM, "out of memory");
    int rc = tide_json_parse(h, s, n, offset, err);
    yajl_free(h);
    return rc;
}
