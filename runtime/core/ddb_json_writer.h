/*
 * ddb_json_writer.h - the JSON writer of the DynamoDB codec: compact JSON
 * text appended to one growing buffer. No Lua.
 *
 * Only writing lives here: the encoder emits its text straight into the
 * buffer, which is much cheaper than building a tree and dumping it. Parsing
 * goes through yajl (ddb_decode.c, ddb_limits.c).
 */
#ifndef TIDE_DDB_JSON_WRITER_H
#define TIDE_DDB_JSON_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

/* An appending output buffer. Start zeroed; free p with free(). Every
 * append returns false (and sets oom) when out of memory; later appends are
 * then no-ops, so a caller may check once at the end. */
struct tide_json_buf {
    char *p;
    size_t len, cap;
    bool oom;
};

/* The growing part of tide_json_reserve (out of line: rare). */
bool tide_json_grow(struct tide_json_buf *b, size_t more);

/* Makes room for more bytes at p + len (for writing in place). Inline, as
 * are the appends: the encoders call them per key and value, and a call
 * into another file each time was a tenth of json_encode's cost. */
static inline bool tide_json_reserve(struct tide_json_buf *b, size_t more)
{
    if (!b->oom && more <= b->cap - b->len)
        return true;
    return tide_json_grow(b, more);
}

static inline bool tide_json_add(struct tide_json_buf *b, const char *s, size_t n)
{
    if (!tide_json_reserve(b, n))
        return false;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return true;
}

static inline bool tide_json_addc(struct tide_json_buf *b, char c)
{
    if (!tide_json_reserve(b, 1))
        return false;
    b->p[b->len++] = c;
    return true;
}

/* Appends s[0..n) (valid UTF-8, may contain NUL) as a JSON string, quoted
 * and escaped exactly as jansson's compact dump does: \" \\ \b \f \n \r \t,
 * other bytes below 0x20 as \u00XX (upper-case hex), the rest as they are. */
bool tide_json_add_string(struct tide_json_buf *b, const char *s, size_t n);

/* Appends the finite double x as jansson 2.14's compact dump wrote a real,
 * the form request bodies have always had: printf's "%.17g", then a '.'
 * whatever the C locale's decimal point, the exponent without '+' or
 * leading zeros, and ".0" added when there is neither '.' nor 'e'
 * (0.5 -> 0.5, 0.1 -> 0.10000000000000001, 1e22 -> 1e22). */
bool tide_json_add_real(struct tide_json_buf *b, double x);

#endif
